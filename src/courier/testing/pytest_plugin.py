"""courier's pytest plugin (entry point ``pytest11``): fixtures for testing apps that use courier."""
