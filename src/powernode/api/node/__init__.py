"""The node API (`/node/v1`): what agents talk to, over mutual TLS on its own port."""
