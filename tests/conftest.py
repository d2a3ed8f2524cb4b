"""Shared fixtures for courier's own tests."""

from __future__ import annotations
