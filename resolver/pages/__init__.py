"""The node's pages for people: a scanned identifier's page and the pages for when there is none, in Chinese or
English, phone first, without script or external assets.

    layout.py      the frame, the style sheet, the Content-Security-Policy, the search box
    i18n.py        the words in both languages, the choice of language, dates, labels
    formats.py     a value's data as HTML by its kind (links, references, dates, HS_ADMIN/HS_SITE in words)
    facts.py       what a page needs from the store besides the values: the reference chain, templates
    identifier.py  the identifier page
    errors.py      invalid, not found, unknown prefix, referral, unreadable; the home page
    response.py    a rendered page as an aiohttp response with its security headers

Only response.py knows aiohttp, only facts.py reads the store; the rest turns data into escaped HTML.
"""
