from hpsearch.cli import app

app(prog_name="hpsearch")
