"""Attacks on a real server: every hostile input must end in a clear 4xx JSON answer, with the
server up and nothing already registered lost."""
