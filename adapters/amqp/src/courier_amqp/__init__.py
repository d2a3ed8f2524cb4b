"""AMQP 0-9-1 transport for courier (RabbitMQ), on pika."""
