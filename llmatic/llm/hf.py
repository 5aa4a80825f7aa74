"""A local Hugging Face causal language model as the code generator.

The paper used ``Salesforce/codegen-6B-mono``, zero-shot: the prompt is the parent network's
code followed by the instruction as a docstring, and the model continues it. Any checkpoint
that ``AutoModelForCausalLM`` can load works the same way.

Requests are generated in batches (left padding, one ``generate`` call per batch), each row
sampled at its own temperature: ``generate`` runs with ``temperature=1.0`` and a logits
processor divides each row's scores by that row's temperature. Completions are
reproducible on one machine: the torch RNG is seeded from the generator's seed and the
batch's first request before each batch, inside a forked RNG state so the caller's RNG is
left untouched. Results can still differ across hardware, library versions and batch
compositions (padding changes floating-point sums).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from llmatic.llm.base import CodeGenerator, cut_at_stop, mix_seeds
from llmatic.types import Completion, GenerationRequest

log = logging.getLogger(__name__)

#: Temperatures at or below this are clamped to it: sampling becomes (near-)greedy.
MIN_TEMPERATURE = 1e-5
#: Mixed seeds are reduced modulo this: ``torch.manual_seed`` takes any 63-bit value.
TORCH_SEED_MODULUS = 2**63 - 1

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class RowTemperature(LogitsProcessor):
    """Divide each row's next-token scores by that row's own temperature.

    ``generate`` only knows one temperature per call; this lets one batch mix the
    temperatures that the prompt archive chose for each request.

    Args:
        temperatures: One temperature per row of the batch; values below
            :data:`MIN_TEMPERATURE` are clamped to it.

    """

    def __init__(self, temperatures: Sequence[float] | torch.Tensor) -> None:
        t = torch.as_tensor(temperatures, dtype=torch.float32).reshape(-1, 1)
        self.temperatures = t.clamp_min(MIN_TEMPERATURE)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        """Return ``scores / temperatures`` with temperatures of shape ``(batch, 1)``."""
        t = self.temperatures.to(device=scores.device)
        # In float32 at least: a tiny temperature must not overflow half-precision scores.
        out_dtype = torch.promote_types(scores.dtype, torch.float32)
        return scores.to(out_dtype) / t.to(out_dtype)


class StopOnStrings(StoppingCriteria):
    """Mark a row finished once its generated text contains any stop string.

    Only the last few tokens of each row are decoded at every step (enough to hold the
    longest stop string, since every token is at least one byte), so the check stays cheap.

    Args:
        tokenizer: The tokenizer that decodes the rows.
        stop: The stop strings.
        prompt_length: Number of (padded) prompt tokens at the start of every row.

    """

    def __init__(self, tokenizer: Any, stop: Sequence[str], prompt_length: int) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.prompt_length = prompt_length
        self.window = max((len(s.encode("utf-8")) for s in self.stop), default=0) + 2

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        """Return one flag per row: True where the row's new text holds a stop string."""
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(
            input_ids[:, start:],
            skip_special_tokens=True,
            clean_up_tokenization_spaces=False,
        )
        done = [any(s in text for s in self.stop) for text in tails]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class HFGenerator(CodeGenerator):
    """Generate code with a local Hugging Face causal LM, in batches.

    Args:
        model: A local directory holding ``config.json`` and the weights, or a hub id
            (e.g. ``Salesforce/codegen-6B-mono``) that is already in the local cache or can be
            downloaded. Loaded once, here.
        max_new_tokens: Tokens generated per completion at most.
        batch_size: Requests per ``generate`` call.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ...
        torch_dtype: ``"auto"`` (the checkpoint's dtype on GPU, float32 on CPU), ``"float32"``,
            ``"float16"`` or ``"bfloat16"``.
        top_p: Nucleus-sampling mass; 1.0 disables it.
        stop: Strings that end a completion; the text is cut before the first one.
        seed: Seed mixed with each batch's first request seed.
        trust_remote_code: Passed to ``from_pretrained`` (needed by some hub models).
        local_files_only: Never touch the network; load from the local cache or directory.
        top_k: Keep only the k most likely tokens before sampling; 0 disables it. The default,
            50, is the Hugging Face default that the reference code sampled with.
        device_map: Passed to ``from_pretrained`` (e.g. ``"auto"`` to spread a large model
            over the GPUs with accelerate); None keeps the whole model on ``device``.

    Chat-format requests (``request.messages``) go through the tokenizer's chat template
    when it has one (instruct models); otherwise the plain prompt is used.

    Raises:
        ValueError: If the model or tokenizer cannot be loaded, or an argument is invalid.

    """

    is_llm = True

    def __init__(
        self,
        *,
        model: str,
        max_new_tokens: int = 350,
        batch_size: int = 4,
        device: str = "auto",
        torch_dtype: str = "auto",
        top_p: float = 1.0,
        stop: Sequence[str] = (),
        seed: int = 0,
        trust_remote_code: bool = False,
        local_files_only: bool = False,
        top_k: int = 50,
        device_map: str | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"llm.max_new_tokens must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"llm.batch_size must be >= 1, got {batch_size}")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"llm.top_p must be in (0, 1], got {top_p}")
        if torch_dtype != "auto" and torch_dtype not in _DTYPES:
            raise ValueError(
                f"llm.torch_dtype must be 'auto' or one of {sorted(_DTYPES)}, got {torch_dtype!r}"
            )
        self.model_id = str(model)
        self.name = f"hf:{self.model_id}"
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        self.top_p = float(top_p)
        self.top_k = int(top_k)
        self.stop = tuple(s for s in stop if s)
        self.seed = int(seed)
        self.device = torch.device(
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.device_map = device_map
        self.tokenizer, self.model = self._load(
            torch_dtype, trust_remote_code=trust_remote_code, local_files_only=local_files_only
        )
        if device_map is not None:  # accelerate placed the layers; inputs go to the first
            self.device = next(self.model.parameters()).device
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_id: int | None = self.tokenizer.eos_token_id
        self.pad_id: int = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        )
        self.context_length = self._context_length()
        self.max_prompt_tokens: int | None = None
        if self.context_length is not None:
            self.max_prompt_tokens = self.context_length - self.max_new_tokens
            if self.max_prompt_tokens < 1:
                raise ValueError(
                    f"llm.max_new_tokens={self.max_new_tokens} leaves no room for a prompt in "
                    f"the model's context of {self.context_length} tokens"
                )

    # ----------------------------------------------------------------------------- loading
    def _load(self, torch_dtype: str, *, trust_remote_code: bool, local_files_only: bool):
        """Load tokenizer and model, or raise a ValueError that says how to fix the config."""
        model_id = self.model_id
        looks_local = os.path.isabs(model_id) or model_id.startswith((".", "~"))
        path = os.path.expanduser(model_id)

        def fail(reason: str) -> ValueError:
            return ValueError(
                f"llm.model={model_id!r} could not be loaded: {reason}. Set llm.model to a local "
                "directory holding config.json, the tokenizer files and the weights (e.g. saved "
                "with save_pretrained, or `huggingface-cli download Salesforce/codegen-6B-mono "
                "--local-dir DIR`), or to a hub id that is already downloaded into the Hugging "
                "Face cache (this machine may have no internet)."
            )

        # Fail fast, without a hub round trip, for a path that plainly is not there.
        is_dir = os.path.isdir(path)
        if looks_local and not is_dir:
            raise fail("no such directory")
        if is_dir and not os.path.isfile(os.path.join(path, "config.json")):
            raise fail("the directory has no config.json")

        if torch_dtype == "auto":
            # Half precision on CPU is slow or unsupported for many ops: use float32 there.
            dtype: Any = "auto" if self.device.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[torch_dtype]

        def load(local_only: bool):
            common = {"trust_remote_code": trust_remote_code, "local_files_only": local_only}
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, **common)
            except Exception as e:  # noqa: BLE001 - any loading failure is a config problem
                raise fail(f"tokenizer: {type(e).__name__}: {e}") from e
            try:
                placement = {} if self.device_map is None else {"device_map": self.device_map}
                model = AutoModelForCausalLM.from_pretrained(
                    source, **{_dtype_kwarg(): dtype}, **placement, **common
                )
            except Exception as e:  # noqa: BLE001
                raise fail(f"model: {type(e).__name__}: {e}") from e
            return tokenizer, model

        source = path if is_dir else model_id
        if is_dir or local_files_only:
            tokenizer, model = load(local_files_only)
        else:
            # A hub id. The cache first: no network needed for a downloaded model. Then the
            # hub, but only once it answers: the hub client retries for about a minute before
            # it gives up on a machine without internet.
            try:
                tokenizer, model = load(True)
            except ValueError as cache_error:
                if not _hub_reachable():
                    raise fail(
                        "it is not in the local Hugging Face cache and the hub is unreachable "
                        f"(no internet?); from the cache: {cache_error.__cause__}"
                    ) from cache_error
                tokenizer, model = load(False)
        if self.device_map is None:
            model.to(self.device)
        model.eval()
        return tokenizer, model

    def _context_length(self) -> int | None:
        """Return the model's maximum sequence length, or None when it does not say."""
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        value = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(value, int) and 0 < value < 1_000_000:  # HF uses ~1e30 for "unknown"
            return value
        return None

    # --------------------------------------------------------------------------- encoding
    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Tokenize prompts, left-truncate long ones, and left-pad them into one batch.

        Args:
            prompts: The prompt texts.

        Returns:
            ``(input_ids, attention_mask, prompt_tokens)``: two ``(batch, length)`` tensors on
            the model's device (padding on the left, where the mask is 0) and the number of
            real tokens per prompt.

        """
        rows: list[list[int]] = []
        for prompt in prompts:
            ids = list(self.tokenizer(prompt)["input_ids"])
            limit = self.max_prompt_tokens
            if limit is not None and len(ids) > limit:
                log.warning(
                    "%s: prompt of %d tokens left-truncated to its last %d (context %d, "
                    "max_new_tokens %d)",
                    self.name,
                    len(ids),
                    limit,
                    self.context_length,
                    self.max_new_tokens,
                )
                ids = ids[-limit:]
            if not ids:  # generate needs at least one token per row
                ids = [self.eos_id if self.eos_id is not None else self.pad_id]
            rows.append(ids)
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, ids in enumerate(rows):
            input_ids[i, length - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[i, length - len(ids) :] = 1
        return input_ids.to(self.device), attention_mask.to(self.device), [len(r) for r in rows]

    # ------------------------------------------------------------------------- generation
    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Return one completion per request, in order; a failed batch gives errors, not raises.

        Args:
            requests: The requests; each is sampled at its own temperature.

        Returns:
            One :class:`~llmatic.types.Completion` per request.

        """
        out: list[Completion] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self._generate_batch(requests[start : start + self.batch_size]))
        return out

    def _generate_batch(self, chunk: Sequence[GenerationRequest]) -> list[Completion]:
        t0 = time.perf_counter()
        try:
            if self.model is None:
                raise RuntimeError("the generator was closed")
            completions = self._sample(chunk)
        except Exception as e:  # noqa: BLE001 - e.g. CUDA OOM: record it, keep searching
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            log.warning(
                "%s: batch of %d failed: %s: %s", self.name, len(chunk), type(e).__name__, e
            )
            error = f"{type(e).__name__}: {e}"
            completions = [Completion(text="", error=error) for _ in chunk]
        seconds = (time.perf_counter() - t0) / len(chunk)
        for c in completions:
            c.seconds = seconds
        return completions

    def _sample(self, chunk: Sequence[GenerationRequest]) -> list[Completion]:
        input_ids, attention_mask, prompt_tokens = self.encode([self.prompt_text(r) for r in chunk])
        prompt_length = input_ids.shape[1]
        stopping = (
            StoppingCriteriaList([StopOnStrings(self.tokenizer, self.stop, prompt_length)])
            if self.stop
            else None
        )
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(mix_seeds(self.seed, chunk[0].seed, modulus=TORCH_SEED_MODULUS))
            output = self.model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,  # the per-row temperature is applied by RowTemperature
                top_p=self.top_p,
                top_k=self.top_k,
                num_beams=1,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.pad_id,
                eos_token_id=self.eos_id,
                logits_processor=LogitsProcessorList(
                    [RowTemperature([r.temperature for r in chunk])]
                ),
                stopping_criteria=stopping,
            )
        new_tokens = output[:, prompt_length:].tolist()
        completions = []
        for row, n_prompt in zip(new_tokens, prompt_tokens, strict=True):
            if self.eos_id is not None and self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            if self.pad_id != self.eos_id:
                row = [t for t in row if t != self.pad_id]
            text = self.tokenizer.decode(
                row, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            completions.append(
                Completion(
                    text=cut_at_stop(text, self.stop),
                    prompt_tokens=n_prompt,
                    completion_tokens=len(row),
                )
            )
        return completions

    def prompt_text(self, request: GenerationRequest) -> str:
        """The text the model sees.

        Chat messages go through the tokenizer's chat template (instruct models); otherwise
        the plain prompt (base models, the paper's format).
        """
        if request.messages and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [dict(m) for m in request.messages], tokenize=False, add_generation_prompt=True
            )
        return request.prompt

    def close(self) -> None:
        """Free the model (and GPU memory); later calls to ``generate`` return errors."""
        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _hub_reachable(timeout_s: float = 5.0) -> bool:
    """Return whether the Hugging Face hub answers a TCP connection within ``timeout_s``."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _dtype_kwarg() -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
