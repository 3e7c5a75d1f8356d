"""The engine that generates: vLLM where it imports and a GPU is visible, else transformers.

    engine = load_engine("models/SmolLM2-135M-Instruct", engine="auto", max_model_len=8192)

Apart from clinical_distil/engines.py (the interface both backends implement) so that the
backends import the interface and this module imports the backends, with no cycle.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from clinical_distil.engines import check_engine_options
from clinical_distil.files import InputError, check_model, model_location

log = logging.getLogger(__name__)
# Engines that are no model, installed by name under this entry point group (pyproject.toml): a --model_id equal
# to one of the names, or to NAME@OPTION, loads it instead of a model. The factory is called as
# factory(notes_file, notes, seed), with option=OPTION where one is given (the reference teacher's precision), and
# returns an engine with the interface of clinical_distil.engines, plus `manifest` (what stage A's manifest says
# of the teacher) and, if it writes from each request rather than the prompt, `needs_requests = True`.
ENGINES_GROUP = "clinical_distil.engines"


def plugged_engines() -> dict[str, Any]:
    """The engines installed under ENGINES_GROUP, by name (not loaded)."""
    from importlib.metadata import entry_points

    return {entry.name: entry for entry in entry_points(group=ENGINES_GROUP)}


def plugged_engine(model_id: str) -> Any | None:
    """The factory of the engine installed under this name (NAME or NAME@OPTION), or None: the id names a model."""
    import functools

    name, at, option = str(model_id).partition("@")
    entry = plugged_engines().get(name)
    if entry is None:
        return None
    return functools.partial(entry.load(), option=option) if at else entry.load()


def is_plugged(model_id: str) -> bool:
    """Whether the id names an engine that is no model (nothing to look for on disk)."""
    return str(model_id).partition("@")[0] in plugged_engines()


def load_engine(model_id: str, engine: str = "auto", max_model_len: int | None = None,
                tensor_parallel_size: int | None = None, batch_size: int = 16, seed: int = 0,
                adapter: str | None = None, dtype: str = "auto", **vllm_options) -> Any:
    """The vLLM engine where vLLM imports and a GPU is visible (for engine='auto'), else transformers.

    dtype "auto" is bf16 on a GPU (float32 for the transformers engine on a CPU); float32 on both
    engines makes greedy replies comparable token for token (bf16 kernels differ between them).
    `vllm_options` go to the vLLM engine (start_mode, ...); the transformers engine has no use for them.
    """
    check_model(model_id)
    model_id = model_location(model_id)
    chosen = check_engine_options(engine, dtype, adapter)
    log.info("engine: %s for %s", chosen, model_id)
    if chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
        from clinical_distil.vllm_engine import VLLMEngine

        return VLLMEngine(str(model_id), max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                          seed=seed, adapter=adapter, dtype=dtype, **vllm_options)
    from clinical_distil.hf_engine import TransformersEngine

    return TransformersEngine(str(model_id), max_model_len=max_model_len, batch_size=batch_size, adapter=adapter,
                              dtype=dtype)
