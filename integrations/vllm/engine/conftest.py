"""The engine stage's fixtures: tiny models of each family, with transformers' outputs on their weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import families
import pytest
from vllm_start import MAX_TOKENS, PROMPT


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """(family, layers) -> (model folder, transformers' reference outputs), made once per worker."""
    made: dict[tuple[str, int], tuple[Path, dict[str, Any]]] = {}

    def model(family: str, layers: int) -> tuple[Path, dict[str, Any]]:
        if (family, layers) not in made:
            folder = tmp_path_factory.mktemp(f"{family}-{layers}")
            families.write_model(folder, families.FAMILIES[family], layers)
            made[family, layers] = folder, families.reference_outputs(folder, PROMPT, MAX_TOKENS)
        return made[family, layers]

    return model
