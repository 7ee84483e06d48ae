"""What routes do beyond reading a row: validating and creating edits, gating and promoting, rendering reports."""
