"""OTLP delivery: settings, the write-ahead spool, the three protocol
exporters, the Shipper that ties them together, and metrics export."""
