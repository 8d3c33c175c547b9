"""Where the project's versioned data (config/) lives, for the library and the CLI."""

from __future__ import annotations

import os
from pathlib import Path

# The package lives in <root>/src/selfcorrect; SELFCORRECT_ROOT overrides for other layouts.
PROJECT_ROOT = Path(os.environ.get("SELFCORRECT_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_DIR = PROJECT_ROOT / "config"
SOURCES_FILE = CONFIG_DIR / "sources.yaml"
CONDITIONS_FILE = CONFIG_DIR / "conditions.yaml"
SCHEMA_FILE = CONFIG_DIR / "config.schema.yaml"
DEFAULT_CONFIG = PROJECT_ROOT / "config.yaml"
