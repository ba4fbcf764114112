"""One module per annotation format; readers return `stad.structures` records."""
