"""OTLP delivery: settings, the write-ahead spool, the senders (http, grpc,
and the SDK's for metrics), the Shipper that ties them together, and metrics
export. Encoding is otel/'s job; this package does the I/O."""
