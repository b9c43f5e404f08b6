"""What a person reads: the stage's tables and report (`report`), its PNG plots (`plots`), the
final table (`final`), the GitHub step summary and JUnit XML (`ci`), and any of those tables as
HTML for a notebook (`html`)."""
