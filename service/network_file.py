"""Network cost models as files: the proto `Network` message in its JSON mapping,
written as JSON or TOML, so a file and a SetNetwork call share one schema and one codec.

Field names may be snake_case (as in the .proto) or lowerCamelCase; int64 values may be
numbers or strings; enums are names such as "SLA_TIER_PREMIUM". Unknown fields are
errors, so a typo cannot silently drop part of the model.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from allocd.v1 import network_service_pb2 as pb
from google.protobuf import json_format

from core.errors import DomainError
from core.network import NetworkSpec
from service.network_codec import network_from_proto, network_to_proto

_PARSERS: dict[str, Callable[[str], Any]] = {".toml": tomllib.loads, ".json": json.loads}


def load_network_file(path: str | Path) -> NetworkSpec:
    """The file's network, validated as far as possible without the catalogue.

    Raises ValueError naming the file and what is wrong with it.
    """
    path = Path(path)
    parse = _PARSERS.get(path.suffix.lower())
    if parse is None:
        raise ValueError(f"{path}: a network file must end in .toml or .json")
    try:
        data: Any = parse(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot read the network file: {error.strerror}") from error
    except ValueError as error:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table/object of network fields")
    try:
        msg = json_format.ParseDict(data, pb.Network())
    except json_format.ParseError as error:
        raise ValueError(f"{path}: {error}") from error
    try:
        return network_from_proto(msg, field="")
    except DomainError as error:
        raise ValueError(f"{path}: {error.message}") from error


def write_network_file(spec: NetworkSpec, path: str | Path) -> None:
    """Export as JSON that `load_network_file` reads back to an equal spec."""
    data = json_format.MessageToDict(network_to_proto(spec), preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
