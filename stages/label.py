"""label stage: ask the oracle about every record that passed the prefilter (cached, validated, resumable);
for a generate filter, run the generate job instead.

``--shard I`` labels shard I of ``label.shards`` instead (the label_shards stage, docs/scaling.md)."""

import argparse
import sys
from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.errors import ConfigError
from distill.stage import stage
from distill.students import student_problem


@stage
def main(params):
    parser = argparse.ArgumentParser(prog="stages/label.py")
    parser.add_argument("--shard", type=int, default=None, help="label this shard of label.shards only")
    args = parser.parse_args(sys.argv[1:])
    label = section(params, "label")
    if args.shard is None and label.shards:
        raise ConfigError(f"label.shards is {label.shards}: label each shard with `python stages/label.py --shard "
                          "I` (the label_shards stage, docs/scaling.md), or set label.shards=null to label "
                          "everything here")
    spec, oracle = pipeline.filter_spec(section(params, "filter")), section(params, "oracle")
    problem = student_problem(section(params, "student"), spec)
    if problem:  # the labels would be paid for a pipeline that cannot train: say so first
        raise ConfigError(problem)
    if label.shards and not spec.READS_CORPUS:
        raise ConfigError(f"label.shards is {label.shards}, but filter {spec.name!r} generates its rows (kind "
                          f"{spec.kind!r}) and reads no corpus to shard: set label.shards=null")
    if args.shard is not None:
        pipeline.label_shard(label, oracle, spec, args.shard, section(params, "merge").extra_dir)
        return
    prefilter = section(params, "prefilter")
    pipeline.label(label, oracle, spec, Path(prefilter.output_dir) / "passed.jsonl")


if __name__ == "__main__":
    main()
