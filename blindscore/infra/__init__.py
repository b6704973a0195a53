"""Infrastructure every node uses: databases, gRPC transport and TLS, status mapping, metrics, locks."""
