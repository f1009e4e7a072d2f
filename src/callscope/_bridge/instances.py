"""What a model LangChain could not serialize says about its requests, read from the model itself.

LangChain describes a model to callbacks by serializing it: ``serialized["kwargs"]`` holds the
constructor fields set away from their defaults, where the endpoint and the request parameters
live (``providers.constructor_fields``). A model that is not serializable (``ChatOllama``) reaches
the callbacks as a ``repr`` only, so its ``base_url``, ``num_predict`` or ``top_p`` would be lost.
The run-body wrappers hold the instance while its run executes; they hand it here, and the same
fields are read from it (pydantic's ``model_fields_set``: exactly the fields the constructor set)
and added to the span and the run's metric attributes where the start left them out.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from callscope._bridge import providers
from callscope._bridge.runs import RunRecord

_log = logging.getLogger("callscope")

_READ_FIELDS = frozenset(providers.REQUEST_FIELD_NAMES) | frozenset(providers.ENDPOINT_FIELDS)


@functools.lru_cache(maxsize=256)
def _fields_to_read(cls: type) -> tuple[str, ...]:
    """The fields of ``cls`` callscope reads, when LangChain does not serialize it: none for a
    serializable model (its start already had them) or a model without such fields (the fakes)."""
    try:
        if cls.is_lc_serializable():  # type: ignore[attr-defined]
            return ()
        return tuple(sorted(_READ_FIELDS.intersection(getattr(cls, "model_fields", ()))))
    except Exception:  # not a LangChain model class: nothing to read
        return ()


def describe_instance(record: RunRecord, model: Any) -> None:
    """Add what ``model``'s own fields say to its run, where the run's start said nothing."""
    names = _fields_to_read(type(model))
    if not names:
        return
    try:
        chosen = model.model_fields_set
        fields = {name: getattr(model, name) for name in names if name in chosen}
        attributes: providers.Attributes = {}
        server = providers.server_of(fields)
        if server is not None:
            attributes[providers.SERVER_ADDRESS], attributes[providers.SERVER_PORT] = server
        providers.add_request_parameters(attributes, {}, {}, fields)
        if not attributes:
            return
        if record.sampled:
            present = getattr(record.span, "attributes", None) or {}
            record.span.set_attributes({key: value for key, value in attributes.items() if key not in present})
        if server is not None:
            record.model_server = server
            measured = record.metric_attributes
            if measured is not None and providers.SERVER_ADDRESS not in measured:
                record.metric_attributes = {**measured, providers.SERVER_ADDRESS: server[0], providers.SERVER_PORT: server[1]}
    except Exception:  # a model whose fields misbehave: the run keeps what its start said
        _log.debug("callscope: could not read the fields of %s", type(model).__qualname__, exc_info=True)


@functools.lru_cache(maxsize=256)
def streams_its_request(cls: type) -> bool:
    """Whether ``stream()`` on a model of ``cls`` streams its request: it implements ``_stream``
    or ``_astream``; LangChain falls back to ``invoke`` for a model that implements neither."""
    from langchain_core.language_models import BaseChatModel, BaseLLM

    for base in (BaseChatModel, BaseLLM):
        if issubclass(cls, base):
            return getattr(cls, "_stream", None) is not base._stream or getattr(cls, "_astream", None) is not base._astream
    return False
