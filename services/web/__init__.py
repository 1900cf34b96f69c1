"""Web pages of the BRL services: one base template, the shared script (key-in-header login, polling, DOM
and SVG helpers), the stylesheet and the vendored front-end libraries, all shipped in the package."""
