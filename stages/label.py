"""label stage: ask the oracle about every record that passed the prefilter (cached, validated, resumable);
for a generate filter, run the generate job instead."""

from pathlib import Path

from distill import pipeline
from distill.config import section
from distill.errors import ConfigError
from distill.stage import stage
from distill.students import student_problem


@stage
def main(params):
    spec = pipeline.filter_spec(section(params, "filter"))
    problem = student_problem(section(params, "student"), spec)
    if problem:  # the labels would be paid for a pipeline that cannot train: say so first
        raise ConfigError(problem)
    prefilter = section(params, "prefilter")
    pipeline.label(
        section(params, "label"), section(params, "oracle"), spec, Path(prefilter.output_dir) / "passed.jsonl"
    )


if __name__ == "__main__":
    main()
