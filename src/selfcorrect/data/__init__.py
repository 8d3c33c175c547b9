"""The benchmarks' files: fetched and pinned (``sources``), and read into typed tables (``bbq``, ``winogender``).

The readers are not in the tasks (``tasks/``) because more than a task reads these files: ``predictions.py`` scores
the published UnifiedQA predictions against the BBQ table, and the tests build rows from it. The names below are the
package's API; ``selfcorrect.data.load_bbq`` and ``selfcorrect.data.bbq.load_bbq`` are the same function.
"""

from .bbq import (
    BBQ_CATEGORIES,
    BBQ_TEMPLATES,
    bbq_template_paths,
    check_scorable,
    flatten_bbq,
    join_bbq_templates,
    load_bbq,
    read_bbq_templates,
    read_jsonl,
)
from .sources import DataError, SourceFile, fetch, load_sources, pinned_file_of, source_file, verify_pinned
from .winogender import GENDERS, load_winogender

__all__ = ["BBQ_CATEGORIES", "BBQ_TEMPLATES", "DataError", "GENDERS", "SourceFile", "bbq_template_paths",
           "check_scorable", "fetch", "flatten_bbq", "join_bbq_templates", "load_bbq", "load_sources",
           "load_winogender", "pinned_file_of", "read_bbq_templates", "read_jsonl", "source_file", "verify_pinned"]
