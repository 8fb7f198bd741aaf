"""Useful/noisy labels from an LLM judge behind any OpenAI-compatible server (the paper's later labelling rule).

The prompt is a text file (`judge_prompt.txt` here, or the user's own) with the placeholders `{question}`,
`{answers}`, `{query}` and `{documents}`; the judge must end its reply with `Verdict: useful` or `Verdict: noisy`.
Every row gets at most 1 + retries attempts: a timeout, a 5xx or a reply without a verdict is asked again, a 4xx is
not. A row the judge never labels stays None: it is counted and dropped by the caller, never guessed.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from zerosearch.search.documents import format_documents
from zerosearch.search.http_json import JsonPoster
from zerosearch.search.openai_client import v1_url

DEFAULT_PROMPT = Path(__file__).with_name("judge_prompt.txt")
PLACEHOLDERS = ("{question}", "{answers}", "{query}", "{documents}")
_VERDICT = re.compile(r"verdict\s*:\s*\**\s*(useful|noisy)\b", re.IGNORECASE)


def load_prompt(path: str | Path | None = None) -> str:
    """The judge's prompt template; a file without every placeholder is an error naming the missing ones."""
    path = Path(path) if path else DEFAULT_PROMPT
    if not path.is_file():
        raise FileNotFoundError(f"judge prompt not found: {path}")
    text = path.read_text(encoding="utf-8")
    missing = [p for p in PLACEHOLDERS if p not in text]
    if missing:
        raise ValueError(f"judge prompt {path} lacks the placeholder(s) {', '.join(missing)}")
    return text


def judge_prompt(template: str, row: dict[str, Any]) -> str:
    """The template filled from one row (plain replacement: braces elsewhere in the text are left alone)."""
    values = {"{question}": row["question"], "{answers}": "; ".join(row["golden_answers"]), "{query}": row["query"],
              "{documents}": format_documents(row["documents"])}
    for key, value in values.items():
        template = template.replace(key, str(value))
    return template


def parse_verdict(reply: str) -> bool:
    """True for useful, False for noisy: the last `Verdict:` line wins. No verdict raises (and is asked again)."""
    found = _VERDICT.findall(reply)
    if not found:
        raise ValueError(f"no 'Verdict: useful|noisy' in the judge's reply {reply[-120:]!r}")
    return found[-1].lower() == "useful"


class LLMJudge:
    """Labels rows through `/v1/chat/completions` (api="chat") or `/v1/completions`, `concurrency` at a time."""

    def __init__(self, base_url: str, model: str, *, api: str = "chat", prompt: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", retries: int = 3, timeout: float = 60.0,
                 concurrency: int = 8, backoff: float = 0.5, max_tokens: int = 256) -> None:
        if not base_url:
            raise ValueError("collect.label_rule=judge needs collect.judge_url (an OpenAI-compatible server)")
        if api not in ("chat", "completions"):
            raise ValueError(f"collect.judge_api must be chat or completions, not {api!r}")
        self.api, self.model, self.max_tokens = api, model, max_tokens
        self.template = prompt if prompt is not None else load_prompt()
        key = os.environ.get(api_key_env, "").strip() if api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else None
        url = v1_url(base_url, "chat/completions" if api == "chat" else "completions")
        self.poster = JsonPoster(url, timeout=timeout, max_retries=retries, backoff=backoff, headers=headers)
        self.concurrency = max(1, concurrency)
        self.last_error: str | None = None

    def _payload(self, prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": 0.0, "max_tokens": self.max_tokens}
        if self.api == "chat":
            return body | {"messages": [{"role": "user", "content": prompt}]}
        return body | {"prompt": prompt}

    def _parse(self, raw: bytes) -> bool:
        choice = json.loads(raw)["choices"][0]
        text = choice["message"]["content"] if self.api == "chat" else choice["text"]
        if not isinstance(text, str):
            raise TypeError("the judge's reply is not a string")
        return parse_verdict(text)

    def _one(self, row: dict[str, Any]) -> bool | None:
        got = self.poster.post(self._payload(judge_prompt(self.template, row)), self._parse)
        if isinstance(got, Exception):
            self.last_error = str(got)
            return None
        return got

    def label(self, rows: list[dict[str, Any]]) -> list[bool | None]:
        """One label per row, in order; None where every attempt failed."""
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, rows))

    def stats(self) -> dict[str, int]:
        return self.poster.stats()
