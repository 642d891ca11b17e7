"""pySigma plugin: `sigma convert -p otel_fsnotify` (otel_fsnotify/rules/pipeline.py)."""

from otel_fsnotify.rules.pipeline import otel_fsnotify_pipeline

pipelines = {"otel_fsnotify": otel_fsnotify_pipeline}
