"""The OpenLineage 2-0-2 core schema (RunEvent and what it references) and the standard facet
schemas Unlearnd emits, as the spec defines them (openlineage.io/spec/2-0-2/OpenLineage.json).
openlineage-python ships classes generated from these, not the JSON itself, so the test keeps
them here; every facet is checked against the schema its own ``_schemaURL`` names."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

CORE_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json"

_facet_props = {"_producer": {"type": "string", "format": "uri"}, "_schemaURL": {"type": "string", "format": "uri"}}

CORE: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": CORE_URL,
    "$defs": {
        "BaseEvent": {
            "type": "object",
            "properties": {
                "eventTime": {"type": "string", "format": "date-time"},
                "producer": {"type": "string", "format": "uri"},
                "schemaURL": {"type": "string", "format": "uri"},
            },
            "required": ["eventTime", "producer", "schemaURL"],
        },
        "BaseFacet": {"type": "object", "properties": _facet_props, "additionalProperties": True,
                      "required": ["_producer", "_schemaURL"]},
        "RunFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"}]},
        "JobFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"},
                               {"type": "object", "properties": {"_deleted": {"type": "boolean"}}}]},
        "DatasetFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"},
                                   {"type": "object", "properties": {"_deleted": {"type": "boolean"}}}]},
        "InputDatasetFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"}]},
        "OutputDatasetFacet": {"allOf": [{"$ref": "#/$defs/BaseFacet"}]},
        "Run": {
            "type": "object",
            "properties": {
                "runId": {"type": "string", "format": "uuid"},
                "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/RunFacet"}},
            },
            "required": ["runId"],
        },
        "Job": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/JobFacet"}},
            },
            "required": ["namespace", "name"],
        },
        "Dataset": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string"},
                "name": {"type": "string"},
                "facets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/DatasetFacet"}},
            },
            "required": ["namespace", "name"],
        },
        "InputDataset": {"allOf": [{"$ref": "#/$defs/Dataset"}, {"type": "object", "properties": {
            "inputFacets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/InputDatasetFacet"}}}}]},
        "OutputDataset": {"allOf": [{"$ref": "#/$defs/Dataset"}, {"type": "object", "properties": {
            "outputFacets": {"type": "object", "additionalProperties": {"$ref": "#/$defs/OutputDatasetFacet"}}}}]},
        "RunEvent": {
            "allOf": [
                {"$ref": "#/$defs/BaseEvent"},
                {
                    "type": "object",
                    "properties": {
                        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
                        "run": {"$ref": "#/$defs/Run"},
                        "job": {"$ref": "#/$defs/Job"},
                        "inputs": {"type": "array", "items": {"$ref": "#/$defs/InputDataset"}},
                        "outputs": {"type": "array", "items": {"$ref": "#/$defs/OutputDataset"}},
                    },
                    "required": ["run", "job"],
                },
            ]
        },
    },
}


def _facet(url: str, name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": url, "$defs": {name: {
        "allOf": [{"$ref": f"{CORE_URL}#/$defs/BaseFacet"},
                  {"type": "object", "properties": properties, "required": required}]}}}


FACETS: dict[str, dict[str, Any]] = {
    schema["$id"]: schema for schema in (
        _facet("https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json", "ErrorMessageRunFacet",
               {"message": {"type": "string"}, "programmingLanguage": {"type": "string"},
                "stackTrace": {"type": "string"}}, ["message", "programmingLanguage"]),
        _facet("https://openlineage.io/spec/facets/2-0-4/JobTypeJobFacet.json", "JobTypeJobFacet",
               {"processingType": {"type": "string"}, "integration": {"type": "string"},
                "jobType": {"type": "string"}}, ["processingType", "integration"]),
        _facet("https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json",
               "DatasetVersionDatasetFacet", {"datasetVersion": {"type": "string"}}, ["datasetVersion"]),
        _facet("https://openlineage.io/spec/facets/1-0-0/InputStatisticsInputDatasetFacet.json",
               "InputStatisticsInputDatasetFacet",
               {"rowCount": {"type": "integer"}, "size": {"type": "integer"}, "fileCount": {"type": "integer"}}, []),
        # The client adds its version as a run tag to every event.
        _facet("https://openlineage.io/spec/facets/1-0-0/TagsRunFacet.json", "TagsRunFacet",
               {"tags": {"type": "array", "items": {
                   "type": "object", "required": ["key", "value"],
                   "properties": {"key": {"type": "string"}, "value": {"type": "string"},
                                  "source": {"type": "string"}}}}}, []),
    )
}


def _registry() -> Registry:
    from app.jobs.lineage_events import FACET_SCHEMA, FACET_SCHEMA_FILE

    resources = [(CORE_URL, CORE), *FACETS.items(), (FACET_SCHEMA, json.loads(FACET_SCHEMA_FILE.read_text()))]
    return Registry().with_resources(
        (url, Resource.from_contents(schema, default_specification=DRAFT202012)) for url, schema in resources)


def validate(event: dict[str, Any]) -> None:
    """The event against RunEvent, and each facet against the schema its _schemaURL names."""
    registry = _registry()
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def check(instance: Any, ref: str) -> None:
        jsonschema.Draft202012Validator({"$ref": ref}, registry=registry, format_checker=checker).validate(instance)

    check(event, f"{CORE_URL}#/$defs/RunEvent")
    facets = [*event["run"].get("facets", {}).values(), *event["job"].get("facets", {}).values()]
    for dataset in [*event.get("inputs", []), *event.get("outputs", [])]:
        for key in ("facets", "inputFacets", "outputFacets"):
            facets += list(dataset.get(key, {}).values())
    for facet in facets:
        check(facet, facet["_schemaURL"])  # an unknown URL fails here: no facet goes unchecked
