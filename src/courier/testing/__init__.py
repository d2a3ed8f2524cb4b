"""Test support shipped with courier: the transport contract suite and a TCP proxy."""
