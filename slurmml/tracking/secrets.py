"""Keep secrets out of what slurmml stores (docs/architecture.md, "Nothing secret is stored"). Pure functions, no I/O.

A name looks secret when one of its words is a secret word. Names are split into words on
`_`, `.`, `-`, spaces and camelCase: `AWS_SECRET_ACCESS_KEY`, `hfToken`, `db.password`, `APIKey`.
Matching words, not substrings, keeps `keyboard`, `monkey`, `tokenizer` and `author` visible.

Machine-learning configs use "key" and "token" for things that are not secret (attention keys,
tokenizer special tokens, counts), so a few qualified forms are not secret:
  - plurals of key and token (`num_keys`, `max_tokens`, `tokens_per_batch`) are counts;
  - `pad_token`, `eos_token`, `token_type_ids`, `key_dim`, `num_key_value_heads`, `metric_key`, ...
    (see NOT_SECRET_BEFORE / NOT_SECRET_AFTER).
"password", "passwd" and "credential" are secret even inside a longer word (`dbpassword`).
When in doubt a name is treated as secret: a masked hyperparameter costs less than a leaked key.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

MASK = "***"

SECRET_WORDS = frozenset({
    "key", "token", "secret", "secrets", "password", "passwords", "passwd", "credential", "credentials",
    "auth", "authorization", "private", "apikey", "apikeys", "accesskey", "secretkey", "privatekey",
    "authtoken", "accesstoken", "refreshtoken", "passphrase", "sessionkey",
})
SECRET_PARTS = ("password", "passwd", "credential")  # secret even inside a longer word

# A "key" or "token" word preceded (or followed) by one of these words names something that is not a secret.
NOT_SECRET_BEFORE = {
    "key": frozenset({"metric", "monitor", "sort", "group", "rng", "prng", "primary", "foreign", "cache", "hash",
                      "dict", "lookup", "join", "index", "input", "output", "label", "target", "image", "text",
                      "data", "dataset", "feature", "column", "partition", "shard", "query", "value", "num"}),
    "token": frozenset({"pad", "bos", "eos", "unk", "cls", "sep", "mask", "special", "start", "end", "stop",
                        "image", "text", "audio", "video", "vision", "first", "last", "max", "min", "num",
                        "next", "prev", "per", "decoder", "split"}),
}
NOT_SECRET_AFTER = {
    "key": frozenset({"dim", "dims", "size", "value", "values", "proj", "projection", "head", "heads", "len",
                      "length", "bias", "layer", "layers", "norm", "states", "cache", "padding", "channels",
                      "name", "field", "column", "fn", "func", "function", "type"}),
    "token": frozenset({"id", "ids", "type", "types", "count", "counts", "limit", "budget", "len", "length",
                        "size", "dim", "dims", "embedding", "embeddings", "emb", "embed", "level", "index",
                        "indices", "mixing", "mixer", "dropout", "pooling", "classifier", "loss", "weight",
                        "weights", "accuracy", "acc"}),
}

_WORDS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def words(name: str) -> list[str]:
    """`AWS_SECRET_ACCESS_KEY` -> [aws, secret, access, key]; `hfToken` -> [hf, token]; `APIKey` -> [api, key]."""
    return [word.lower() for word in _WORDS.findall(name)]


def looks_secret(name: Any) -> bool:
    name = str(name)
    lowered = name.lower()
    if any(part in lowered for part in SECRET_PARTS):
        return True
    parts = words(name)
    for position, word in enumerate(parts):
        if word not in SECRET_WORDS:
            continue
        before = parts[position - 1] if position > 0 else ""
        after = parts[position + 1] if position + 1 < len(parts) else ""
        if before in NOT_SECRET_BEFORE.get(word, ()) or after in NOT_SECRET_AFTER.get(word, ()):
            continue
        return True
    return False


def mask_value(value: Any) -> Any:
    """What a secret-looking key's value is stored as: unset values (None, "") stay visible as unset."""
    return value if value is None or value == "" else MASK


def mask_url(text: str) -> str:
    """`postgres://user:pw@host/db` -> `postgres://user:***@host/db`."""
    return _URL_PASSWORD.sub(lambda match: match.group(1) + MASK + "@", text) if "@" in text else text


_ASSIGNMENT = re.compile(r"""(?<![\w.\-])(-{0,2}[A-Za-z_][\w.\-]*)=('[^']*'|"[^"]*"|[^\s'",\]}]+)""")
# `--token hf_x`: a long option and the word after it, unless that word is the next option
_FLAG_VALUE = re.compile(r"""(?<![\w.\-])(--[A-Za-z][\w.\-]*)(\s+)('[^']*'|"[^"]*"|[^\s'",\]}\-][^\s'",\]}]*)""")


def mask_text(text: str) -> str:
    """Free text: URL passwords, `NAME=value` assignments to secret-looking names
    (`export HF_TOKEN=hf_x` -> `export HF_TOKEN=***`, as in a launcher's `setup` lines) and the value after
    a secret-looking long option (`huggingface-cli login --token hf_x` -> `... --token ***`)."""
    text = mask_url(text)
    if "=" in text:
        text = _ASSIGNMENT.sub(lambda m: f"{m.group(1)}={MASK}" if looks_secret(m.group(1)) else m.group(0), text)
    if "--" in text:
        text = _FLAG_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}" if looks_secret(m.group(1)) else m.group(0),
                               text)
    return text


def mask_config(obj: Any) -> Any:
    """A deep copy of nested mappings and lists, values under secret-looking keys replaced by "***".

    Strings are masked as free text (mask_text: URL passwords, `TOKEN=...`). Mappings (dict, DictConfig, ...)
    become dicts, lists and tuples become lists; other values are kept as they are (not copied).
    """
    if isinstance(obj, Mapping):
        return {key: mask_value(value) if looks_secret(key) else mask_config(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)) or _is_list_like(obj):
        return [mask_config(item) for item in obj]
    if isinstance(obj, str):
        return mask_text(obj)
    return obj


def _is_list_like(obj: Any) -> bool:
    # omegaconf's ListConfig without importing omegaconf
    return type(obj).__name__ == "ListConfig" and hasattr(obj, "__iter__")


def mask_environment(env: Mapping[str, Any]) -> dict[str, Any]:
    return {name: mask_value(value) if looks_secret(name) else mask_text(str(value)) for name, value in env.items()}


def mask_overrides(overrides: Iterable[str]) -> list[str]:
    """Hydra overrides: `db.password=hunter2` -> `db.password=***`, `+api_key=x` -> `+api_key=***`,
    `+db={host:h,password:p}` -> `+db={host:h,password:***}`."""
    return [mask_override(str(override)) for override in overrides]


def mask_override(override: str) -> str:
    key, sep, value = override.partition("=")
    if not sep:
        return mask_text(override)
    if looks_secret(key):
        return f"{key}={mask_value(value)}"
    return f"{key}={mask_text(_mask_dict_text(value))}"


_DICT_KEY = re.compile(r"([{,]\s*)([A-Za-z_][\w.\-]*)(\s*:\s*)")


def _mask_dict_text(text: str) -> str:
    """Values under secret-looking keys of a dict written in Hydra's override syntax: `{user:u,password:p}`."""
    if "{" not in text:
        return text
    parts, pos = [], 0
    while True:
        match = _DICT_KEY.search(text, pos)
        if match is None:
            break
        parts.append(text[pos:match.end()])
        pos = match.end()
        if looks_secret(match.group(2)):
            end = _value_end(text, pos)
            parts.append(mask_value(text[pos:end]))
            pos = end
    return "".join(parts) + text[pos:]


def _value_end(text: str, start: int) -> int:
    """Where the value starting at `start` ends: the next `,` or closing bracket outside quotes and brackets."""
    depth, quote = 0, ""
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "{[(":
            depth += 1
        elif char in "}])" or (char == "," and depth == 0):
            if depth == 0:
                return index
            depth -= 1
    return len(text)


def mask_argv(argv: Iterable[str]) -> list[str]:
    """A command line: `key=value` and `--key=value` forms, and `--api-key VALUE` (the next argument)."""
    masked: list[str] = []
    hide_next = False
    for arg in map(str, argv):
        if hide_next and not arg.startswith("-"):
            masked.append(MASK)
            hide_next = False
            continue
        hide_next = False
        if "=" not in arg and arg.startswith("-") and looks_secret(arg):
            masked.append(arg)
            hide_next = True
        else:
            masked.append(mask_override(arg))
    return masked
