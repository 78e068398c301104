"""shard stage (opt-in, docs/scaling.md): split passed.jsonl into label.shards shards by a hash of the id,
for the label_shards stage (DVC foreach) to label each as its own stage instance."""

from pathlib import Path

from distill.config import section
from distill.errors import ConfigError
from distill.stage import stage


@stage
def main(params):
    from distill.scale.shard import write_shards

    label = section(params, "label")
    if not label.shards:
        raise ConfigError("the shard stage needs label.shards, the shard numbers 0 .. N-1 (e.g. [0, 1, 2, 3])")
    passed = Path(section(params, "prefilter").output_dir) / "passed.jsonl"
    counts = write_shards(passed, label.shard_dir, len(label.shards))
    print(f"shard: {sum(counts)} records of {passed} into {len(counts)} shards in {label.shard_dir}: {counts}")


if __name__ == "__main__":
    main()
