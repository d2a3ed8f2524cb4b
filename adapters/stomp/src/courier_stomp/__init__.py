"""stomp transport for courier; see docs/transports/stomp.md."""
