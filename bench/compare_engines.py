"""Compare two stage A (or eval-inference) output folders written by different engines.

    python bench/compare_engines.py --first OUT_VLLM --second OUT_TRANSFORMERS --model models/SmolLM2-135M-Instruct

Prints whether the folders hold the same files with the same columns and rows, the share of
replies whose first 32 tokens agree, the share of replies that parse as JSON, how many replies
were cut at the token limit and, for
eval-inference folders, the share of rows whose extracted answers are the same.
"""

import json
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer

from clinical_distil.cli import run
from clinical_distil.metrics import extract_answer


def main(first: str, second: str, model: str, tokens: int = 32, unparsed: str | None = None) -> None:
    """unparsed: a CSV to write the first folder's replies that do not parse as JSON into, if any (file,
    row, finish reason, output tokens, the reply's last 300 characters), to see how they ended."""
    first_files = sorted(path.name for path in Path(first).glob("*.csv"))
    second_files = sorted(path.name for path in Path(second).glob("*.csv"))
    tokenizer = AutoTokenizer.from_pretrained(model)
    same_shape, agree, total, parsed = first_files == second_files, 0, 0, {"first": 0, "second": 0}
    answers_agree, answered = 0, 0  # eval-inference folders: the extracted answers too
    length_stops = {"first": 0, "second": 0}
    failures = []
    for name in sorted(set(first_files) & set(second_files)):
        left, right = pd.read_csv(Path(first) / name), pd.read_csv(Path(second) / name)
        key = [column for column in left.columns if column not in ("output", "finish_reason", "output_tokens",
                                                                  "model_id")]
        same_shape &= list(left.columns) == list(right.columns) and left[key].equals(right[key])
        length_stops["first"] += int((left["finish_reason"] == "length").sum())
        length_stops["second"] += int((right["finish_reason"] == "length").sum())
        if "label" in left.columns:
            for a, b, reason_a, reason_b in zip(left["output"].fillna(""), right["output"].fillna(""),
                                                left["finish_reason"], right["finish_reason"]):
                answered += 1
                answers_agree += extract_answer(a, reason_a) == extract_answer(b, reason_b)
        for row, (a, b) in enumerate(zip(left["output"].fillna(""), right["output"].fillna(""))):
            total += 1
            agree += tokenizer.encode(a)[:tokens] == tokenizer.encode(b)[:tokens]
            for label, text in (("first", a), ("second", b)):
                try:
                    json.loads(text)
                    parsed[label] += 1
                except ValueError:
                    if label == "first":
                        failures.append({"file": name, "row": row, "finish_reason": left["finish_reason"][row],
                                         "output_tokens": left["output_tokens"][row], "reply_end": text[-300:]})
    summary = {"files": len(first_files), "same_files_columns_rows": bool(same_shape), "replies": total,
               f"first_{tokens}_tokens_agree": round(agree / max(total, 1), 4),
               "json_parse_rate_first": round(parsed["first"] / max(total, 1), 4),
               "json_parse_rate_second": round(parsed["second"] / max(total, 1), 4),
               "length_stops_first": length_stops["first"], "length_stops_second": length_stops["second"]}
    if answered:
        summary["same_extracted_answer"] = round(answers_agree / answered, 4)
    if unparsed and failures:  # only when some reply fails to parse: a clean comparison leaves no empty file
        pd.DataFrame(failures, columns=["file", "row", "finish_reason", "output_tokens", "reply_end"]).to_csv(
            unparsed, index=False)
    print(json.dumps(summary))


if __name__ == "__main__":
    run(main)
