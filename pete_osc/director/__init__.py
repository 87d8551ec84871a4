"""The DIRECTOR language: DIRECTOR.md's schema (schema.py, read with line numbers by
located.py), each value's rules (values.py), the parser that turns streamed text into
events line by line (parser.py), the grammar that holds a model to the schema
(grammar.py), and the per-frame prompt placeholders (prompt.py). Pure: no I/O but
reading the file. Gives :class:`~pete_osc.records.Event` and
:class:`~pete_osc.records.Rejection` records."""
