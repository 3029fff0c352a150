"""Documentation generated from the one definition stays in step with it."""

from hw import docgen


def test_isa_reference_tables_are_current():
    assert docgen.update(check=True), "docs/ISA.md is stale: run `python -m hw.docgen`"
