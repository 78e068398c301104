"""oracle_check stage: the oracle asked again about the test items; how far it disagrees with itself
(or a second oracle) is the floor no student can be judged below."""

from pathlib import Path

from distill import jsonl, pipeline
from distill.config import section
from distill.labeling.oracle_check import check_config, oracle_check
from distill.stage import stage

OUTPUT = Path("metrics/oracle_agreement.json")


@stage
def main(params):
    if not check_config(params).enabled:
        jsonl.write_json(OUTPUT, {"measured": False, "reason": "oracle_check.enabled is false"})
        return
    spec = pipeline.filter_spec(section(params, "filter"))
    if not spec.READS_CORPUS:
        jsonl.write_json(OUTPUT, {"measured": False, "reason": f"filter {spec.name} is a {spec.KIND} task: it has "
                                  "no records two oracles could both answer"})
        return
    passed = Path(section(params, "prefilter").output_dir) / "passed.jsonl"
    test = Path(section(params, "split").output_dir) / "test.jsonl"
    ids = {row["id"] for row in jsonl.read_jsonl(test)}
    # every test item, whatever oracle_check.sample_size says (it sizes `distill oracle-check`): evaluate
    # shows the floor only when it was measured on exactly the items the student is judged on
    oracle_check(params, passed, output=OUTPUT, only_ids=ids, sample_size=max(1, len(ids)))


if __name__ == "__main__":
    main()
