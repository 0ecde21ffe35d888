""" Records as typed, versioned dataclasses, written as JSON and read back with every field checked.

``to_json(record)`` gives the record's fields in their order (nested records as objects, tuples as lists);
``from_json(cls, data, where)`` builds ``cls`` from such an object and checks each value against the field's type
(``int``, ``float`` (an int is accepted), ``str``, ``bool``, ``Optional``, ``Union``, ``List``, ``Tuple``, ``Dict``,
nested dataclasses, ``Any``), then each record's own rules (its ``check_values(where)``: counts that must agree,
accuracies within [0, 100], finite numbers): an untrusted or edited file fails there, in one ``RecordError`` line
naming the file, the field and what was expected, before any work. Unknown keys are errors too. Records written by
an older sp-timm are brought to the current schema first (``records.upgrade``); one written by a newer sp-timm is
refused.
"""
import dataclasses
import math
import typing
from typing import Any, Dict, Iterable, Optional, Type, TypeVar, Union

from ..errors import RecordError

__all__ = ['to_json', 'from_json', 'json_field', 'check_schema_version', 'require', 'check_percent', 'check_finite',
           'percent_value',
           'RecordError']

T = TypeVar('T')


JSON_KEY = 'sp_timm.json_key'  # field metadata: the key in JSON when it is not the field's name (``class``)
OMIT_NONE = 'sp_timm.omit_none'  # field metadata: left out of the JSON while None


def json_field(default: Any = dataclasses.MISSING, *, key: str = '', omit_none: bool = False, **kwargs: Any) -> Any:
    """A record field written under ``key`` in JSON (when the name is a Python keyword), and/or left out while it is
    None (sections a record has only sometimes)."""
    metadata = {**({JSON_KEY: key} if key else {}), **({OMIT_NONE: True} if omit_none else {})}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def to_json(record: Any) -> Any:
    """A dataclass (or a value holding them) as JSON values, fields in declaration order."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.metadata.get(JSON_KEY, f.name): to_json(getattr(record, f.name)) for f in dataclasses.fields(record)
                if not (f.metadata.get(OMIT_NONE) and getattr(record, f.name) is None)}
    if hasattr(record, 'to_json') and not isinstance(record, type):
        return record.to_json()
    if isinstance(record, (list, tuple)):
        return [to_json(v) for v in record]
    if isinstance(record, dict):
        return {k: to_json(v) for k, v in record.items()}
    return record


def from_json(cls: Type[T], data: Any, where: str) -> T:
    """``cls`` (a dataclass) from the JSON object ``data``, every field checked (see the module docstring);
    ``where`` names the file or object for the error message."""
    return _value(cls, data, where)


def check_schema_version(data: Any, current: int, what: str, where: str) -> int:
    """The ``schema_version`` of a record's JSON object (1 when it has none: written before versions existed); a
    ``RecordError`` when it is not an object or was written by a newer sp-timm."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: {what} must be a JSON object, got {type(data).__name__}.")
    version = data.get('schema_version', 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{where}: schema_version must be a whole number >= 1, got {version!r}.")
    if version > current:
        raise RecordError(f"{where}: {what} of schema version {version}, written by a newer sp-timm (this one reads up "
                          f"to {current}); upgrade sp-timm to read it.")
    return version


def _dataclass(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise RecordError(f'{where}: expected a JSON object for {cls.__name__}, got {type(data).__name__}.')
    hints = typing.get_type_hints(cls)
    known = {f.metadata.get(JSON_KEY, f.name): f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise RecordError(f"{where}: unknown field(s) {', '.join(unknown)} in {cls.__name__}; the file was edited or "
                          "is not what it claims to be.")
    values: Dict[str, Any] = {}
    for key, f in known.items():
        if key in data:
            values[f.name] = _value(hints[f.name], data[key], f'{where}: {key}')
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise RecordError(f'{where}: {cls.__name__} field {key!r} is missing.')
    record = cls(**values)
    check_values = getattr(record, 'check_values', None)
    if check_values is not None:
        check_values(where)
    return record


def require(condition: bool, where: str, problem: str) -> None:
    """A ``RecordError`` ``'{where}: {problem}'`` unless ``condition``: a record's own rule, broken."""
    if not condition:
        raise RecordError(f'{where}: {problem}; the file was edited or is not what it claims to be.')


def check_finite(values: Dict[str, Any], where: str, minimum: Optional[float] = None) -> None:
    """Every number of ``values`` (name -> number, list of numbers or None) finite, and >= ``minimum`` if given."""
    for name, value in values.items():
        for number in _numbers(value):
            require(math.isfinite(number), where, f'{name} must be a finite number, got {number!r}')
            require(minimum is None or number >= minimum, where, f'{name} must be >= {minimum}, got {number!r}')


def check_percent(values: Dict[str, Any], where: str) -> None:
    """Every number of ``values`` (name -> accuracy, list of them or None) a percentage in [0, 100]."""
    for name, value in values.items():
        for number in _numbers(value):
            require(math.isfinite(number) and 0 <= number <= 100, where,
                    f'{name} must be a percentage in [0, 100], got {number!r}')


def percent_value(text: Optional[str]) -> float:
    """A percentage written as text (RobustBench's ``"53.42"``) as a number; NaN where it is none (then
    ``check_percent`` refuses it)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return float('nan')


def _numbers(value: Any) -> Iterable[float]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _value(kind: Any, value: Any, where: str) -> Any:  # noqa: C901 -- one branch per kind of type
    if kind is Any:
        return value
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, value, where)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is Union:
        options = [o for o in args if o is not type(None)] if value is not None else list(args)
        errors = []
        for option in options:
            try:
                return _value(option, value, where)
            except RecordError as err:
                errors.append(err)
        if len(errors) == 1:  # Optional[X] holding something: X's own message says what is wrong inside
            raise errors[0]
        raise RecordError(f'{where}: expected {_name(kind)}, got {_shown(value)}.')
    if origin in (list, tuple) or kind in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise RecordError(f'{where}: expected a list, got {_shown(value)}.')
        item = args[0] if args else Any
        return [_value(item, v, f'{where}[{i}]') for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise RecordError(f'{where}: expected an object, got {_shown(value)}.')
        item = args[1] if len(args) == 2 else Any
        return {k: _value(item, v, f'{where}.{k}') for k, v in value.items()}
    if kind is type(None):
        if value is not None:
            raise RecordError(f'{where}: expected null, got {_shown(value)}.')
        return None
    if kind in _SCALARS:
        accepted, described = _SCALARS[kind]
        if not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool):
            raise RecordError(f'{where}: expected {described}, got {_shown(value)}.')
        return value
    raise TypeError(f'{where}: records.schema cannot check the type {kind!r}')


# JSON's scalars: the Python types a field of each kind takes, and how an error names the kind. A float field takes
# ints (JSON writes 90.0 as 90 when Python had an int); a bool is an int to Python, but only a bool field takes one.
_SCALARS = {bool: ((bool,), 'true or false'), int: ((int,), 'a whole number'), float: ((int, float), 'a number'),
            str: ((str,), 'a string')}


def _name(kind: Any) -> str:
    return getattr(kind, '__name__', None) or str(kind).replace('typing.', '')


def _shown(value: Any) -> str:
    text = repr(value)
    return f'{type(value).__name__} {text[:60]}{"..." if len(text) > 60 else ""}'
