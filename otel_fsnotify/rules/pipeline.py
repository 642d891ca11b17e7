"""The taxonomy as a pySigma processing pipeline: convert Sigma rules into a
SIEM's query language over the records otel-fsnotify ships.

    sigma convert -t splunk -p otel_fsnotify config/rules/

Fields become the records' attribute names (taxonomy.FIELDS); a rule's
logsource becomes a condition on the record's `event_name` and its
`fsnotify.action` (taxonomy.CATEGORIES). A rule using a field the records do
not carry fails conversion with a message naming it, rather than producing a
query that silently matches nothing. Registered as a pySigma plugin by
sigma/pipelines/otel_fsnotify (found by sigma-cli under this name).
"""

from __future__ import annotations

from sigma.processing.conditions import ExcludeFieldCondition, LogsourceCondition
from sigma.processing.pipeline import ProcessingItem, ProcessingPipeline
from sigma.processing.transformations import (
    AddConditionTransformation, DetectionItemFailureTransformation, FieldMappingTransformation,
    RuleFailureTransformation)

from .taxonomy import CATEGORIES, EVENT_NAMES, FIELDS, PRODUCT

PIPELINE_NAME = "otel_fsnotify"


def otel_fsnotify_pipeline() -> ProcessingPipeline:
    items: list[ProcessingItem] = [
        ProcessingItem(
            identifier="otel_fsnotify_unknown_field",
            transformation=DetectionItemFailureTransformation(
                "otel-fsnotify records carry only these Sigma fields: " + ", ".join(FIELDS)),
            field_name_conditions=[ExcludeFieldCondition(fields=list(FIELDS))],
        ),
    ]
    for category, actions in CATEGORIES.items():
        items.append(ProcessingItem(
            identifier=f"otel_fsnotify_{category}",
            transformation=AddConditionTransformation(
                {"event_name": list(EVENT_NAMES), "fsnotify.action": list(actions)}),
            rule_conditions=[LogsourceCondition(category=category, product=PRODUCT)],
        ))
    items.append(ProcessingItem(
        identifier="otel_fsnotify_fields",
        transformation=FieldMappingTransformation({name: f.attribute for name, f in FIELDS.items()}),
    ))
    items.append(ProcessingItem(
        identifier="otel_fsnotify_logsource",
        transformation=RuleFailureTransformation(
            "otel-fsnotify records are Linux file events: logsource product linux with category "
            + ", ".join(CATEGORIES)),
        rule_condition_negation=True,
        rule_condition_linking=any,
        rule_conditions=[LogsourceCondition(category=c, product=PRODUCT) for c in CATEGORIES],
    ))
    return ProcessingPipeline(name="otel-fsnotify records (OpenTelemetry log attributes)",
                              priority=20, items=items)
