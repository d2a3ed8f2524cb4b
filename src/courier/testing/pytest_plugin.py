"""courier's pytest plugin (entry point ``pytest11``): fixtures for apps using courier."""
