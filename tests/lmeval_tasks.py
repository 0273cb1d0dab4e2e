"""Local lm-eval task YAMLs for the tests: data in JSON lines next to them (no network).

One multiple-choice task, one generate_until task with a regex filter, one perplexity task.
"""

from __future__ import annotations

import json
from pathlib import Path

MC = [
    {"question": "Is the sky blue?", "choices": [" yes", " no"], "label": 0},
    {"question": "Is fire cold?", "choices": [" yes", " no"], "label": 1},
    {"question": "What is the capital of France?", "choices": [" Paris", " London", " Rome"], "label": 0},
    {"question": "What is 12 plus 7?", "choices": [" 19", " 12", " 7", " 3"], "label": 0},
    {"question": "Is a cat an animal?", "choices": [" no", " yes"], "label": 1},
    {"question": "What does the student imitate?", "choices": [" the teacher", " the dog"], "label": 0},
]
GEN = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "Is the sky blue?", "answer": "yes"},
    {"question": "What is 3 times 4?", "answer": "12"},
    {"question": "Is fire cold?", "answer": "no"},
    {"question": "What is 12 plus 7?", "answer": "19"},
]
PPL = [
    {"text": "The quick brown fox jumps over the lazy dog."},
    {"text": "A teacher model is large and slow; a student model is small and fast."},
    {"text": "Once upon a time there was a little village near the river."},
]

_HEADER = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
"""


def local_task_yaml(name: str, data: Path, body: str) -> str:
    """An lm-eval task YAML reading `data` (JSON lines) in place: no hub, no network."""
    return _HEADER.format(name=name, data=data) + body


_MC_YAML = """\
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
  - metric: acc_norm
metadata:
  version: 1.0
"""
_GEN_YAML = """\
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n", "Question:"]
  max_gen_toks: 12
  do_sample: false
filter_list:
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "(\\\\w+)"
      - function: take_first
metric_list:
  - metric: exact_match
metadata:
  version: 2.0
"""
_PPL_YAML = """\
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""


def write_tasks(folder: Path) -> Path:
    """Write the three tasks (and their data) to `folder`; return it for --lm-eval-include."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows, yaml in (("kd_mc", MC, _MC_YAML), ("kd_gen", GEN, _GEN_YAML), ("kd_ppl", PPL, _PPL_YAML)):
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / f"{name}.yaml").write_text(local_task_yaml(name, data, yaml.format()))
    return folder
