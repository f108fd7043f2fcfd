"""Where the base policy comes from: a named model or the embedded tiny one."""
