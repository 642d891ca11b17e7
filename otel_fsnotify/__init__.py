"""otel-fsnotify: link fsnotify events to the process that caused them and the
process that read them, and ship each as an OpenTelemetry log record."""

__version__ = "0.1.0"
