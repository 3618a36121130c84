"""README's "Testing your service without a broker" block runs as written, with no broker."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_memory_kafka_example_runs() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Testing your service without a broker", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block is not None, "README lost its MemoryKafka example"
    code = block.group(1)
    assert "MemoryKafka" in code and "assert store.get" in code
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (MemoryKafka example)", "exec"), namespace)
    assert namespace["kafka"] is not None
