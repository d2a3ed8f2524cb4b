"""beanstalk transport for courier; see docs/transports/beanstalk.md."""
