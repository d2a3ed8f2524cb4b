"""sqs transport for courier; see docs/transports/sqs.md."""
