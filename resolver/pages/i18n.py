"""The pages' words in Chinese and English, and the choice between them: `?lang=` when the reader picked one,
else the best of the browser's Accept-Language, else Chinese (the node serves Chinese industry). Labels that a
template gives per language are chosen by the same rule; whatever is shown in a language other than the page's
is marked with its own `lang`, so that screen readers and fonts treat it right. Pure: no I/O."""

from __future__ import annotations

import re
from datetime import date

LANGUAGES = ("zh", "en")  #: the languages the pages are written in
DEFAULT_LANGUAGE = "zh"  #: a reader whose browser names neither
HTML_LANG = {"zh": "zh-CN", "en": "en"}  #: the `lang` attribute of a page in each language
MAX_ACCEPT_LANGUAGE_CHARS = 512  #: longer headers are read this far: real ones are a few dozen characters

_ACCEPT_ITEM = re.compile(r"\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]{1,5}))?\s*")
_CJK = re.compile("[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_LATIN = re.compile("[A-Za-z]{2,}")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_MONTHS_EN = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def negotiate(accept_language: str | None, chosen: str | None = None) -> str:
    """The page's language: `chosen` (the `lang` query parameter) when it is one of LANGUAGES, else the
    Accept-Language entry with the highest weight that names one (first wins a tie), else DEFAULT_LANGUAGE."""
    if chosen in LANGUAGES:
        return chosen
    best, best_q = DEFAULT_LANGUAGE, 0.0
    for item in (accept_language or "")[:MAX_ACCEPT_LANGUAGE_CHARS].split(","):
        match = _ACCEPT_ITEM.fullmatch(item)
        if match is None:
            continue
        primary = match.group(1).split("-", 1)[0].lower()
        try:
            q = float(match.group(2)) if match.group(2) else 1.0
        except ValueError:
            continue
        if primary in LANGUAGES and q > best_q:
            best, best_q = primary, q
    return best


def text_language(text: str) -> str | None:
    """The language a value's text is in, as far as the pages care: zh with Chinese characters, en with Latin
    words, None for codes and numbers (no language to mark)."""
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "en"
    return None


def pick_label(labels: tuple[tuple[str, str], ...], lang: str) -> tuple[str, str] | None:
    """(label, its language) from a template's `label` pairs: the reader's language, else the default, else
    English, else the first given; None when there are none."""
    by_lang = {tag.split("-", 1)[0].lower(): text for tag, text in labels}
    for wanted in (lang, DEFAULT_LANGUAGE, "en"):
        if wanted in by_lang:
            return by_lang[wanted], wanted
    if labels:
        return labels[0][1], labels[0][0]
    return None


def humanize(name: str) -> str:
    """A template's camelCase name read as English words, for fields without labels: partNumber -> Part number."""
    words = _CAMEL.sub(" ", name.replace("_", " ")).split()
    text = " ".join(w if w.isupper() else w.lower() for w in words)
    return text[:1].upper() + text[1:]


def format_date(day: date, lang: str) -> str:
    """A calendar date as each language writes it: 2025年8月10日, 10 Aug 2025."""
    if lang == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return f"{day.day} {_MONTHS_EN[day.month - 1]} {day.year}"


#: Well-known value types (handle-protocol.md, Handle value; and the Industrial Internet's common ones) in words.
TYPE_LABELS: dict[str, dict[str, str]] = {
    "URL": {"zh": "网址", "en": "Web address"},
    "DESC": {"zh": "描述", "en": "Description"},
    "EMAIL": {"zh": "电子邮件", "en": "Email"},
    "HS_ADMIN": {"zh": "管理员", "en": "Administrator"},
    "HS_SITE": {"zh": "服务站点", "en": "Service site"},
    "HS_SITE.PREFIX": {"zh": "前缀服务站点", "en": "Prefix service site"},
    "HS_VLIST": {"zh": "管理员组", "en": "Administrator group"},
    "HS_PUBKEY": {"zh": "公钥", "en": "Public key"},
    "HS_SECKEY": {"zh": "密钥", "en": "Secret key"},
    "HS_ALIAS": {"zh": "别名", "en": "Alias"},
    "HS_SERV": {"zh": "服务前缀", "en": "Service prefix"},
    "HS_CERT": {"zh": "证书", "en": "Certificate"},
    "HS_SIGNATURE": {"zh": "签名", "en": "Signature"},
}

#: Every sentence of the pages. `{name}` placeholders are filled with escaped HTML by the caller.
STRINGS: dict[str, dict[str, str]] = {
    "site": {"zh": "工业互联网标识解析", "en": "Industrial Internet identifier resolution"},
    "search_label": {"zh": "查询标识", "en": "Look up an identifier"},
    "search_button": {"zh": "查询", "en": "Look up"},
    "search_hint": {"zh": "例如 {example}", "en": "For example {example}"},
    "details": {"zh": "标识信息", "en": "Details"},
    "chain": {"zh": "追溯链", "en": "Traceability chain"},
    "chain_intro": {
        "zh": "沿标识引用逐级追溯（与 idnode trace 相同）。",
        "en": "Followed along the identifier references, as idnode trace does.",
    },
    "more": {"zh": "更多信息", "en": "More"},
    "technical": {"zh": "技术信息", "en": "Technical details"},
    "open_url": {"zh": "打开产品网页", "en": "Open the product page"},
    "no_values": {
        "zh": "该标识已注册，但没有公开的值。",
        "en": "This identifier is registered but has no public values.",
    },
    "not_found_here": {"zh": "未找到", "en": "not found"},
    "shown_above": {"zh": "见上文", "en": "shown above"},
    "index": {"zh": "索引", "en": "index"},
    "timestamp": {"zh": "时间", "en": "time"},
    "ttl": {"zh": "缓存", "en": "TTL"},
    "ttl_seconds": {"zh": "{n} 秒", "en": "{n} s"},
    "json": {"zh": "JSON 格式", "en": "as JSON"},
    "language": {"zh": "语言", "en": "Language"},
    "home_title": {"zh": "工业互联网标识解析", "en": "Industrial Internet identifier resolution"},
    "home_intro": {
        "zh": "输入或扫描产品、批次、设备上的标识，查看它的信息和追溯链。",
        "en": "Enter or scan the identifier on a product, a batch or a machine to see its record and its chain.",
    },
    "api": {"zh": "接口", "en": "API"},
    "statistics": {"zh": "统计", "en": "Statistics"},
    # error pages
    "invalid_title": {"zh": "不是有效的标识", "en": "Not a valid identifier"},
    "invalid_body": {
        "zh": "{handle} 不是“前缀/后缀”形式的标识（最长 {max} 字节）。请核对二维码或输入的内容。",
        "en": "{handle} is not an identifier of the form prefix/suffix (at most {max} bytes). "
        "Check the code or what was typed.",
    },
    "not_found_title": {"zh": "未找到该标识", "en": "Identifier not found"},
    "not_found_body": {
        "zh": "{handle} 没有在本节点注册。前缀 {prefix} 由本节点解析，请核对后缀是否正确。",
        "en": "{handle} is not registered on this node. The prefix {prefix} is resolved here: "
        "check the part after the slash.",
    },
    "unknown_prefix_title": {"zh": "本节点不解析该前缀", "en": "This node does not serve that prefix"},
    "unknown_prefix_body": {
        "zh": "前缀 {prefix} 不属于本节点，{handle} 需要由该前缀所在的节点解析（可经国家顶级节点查询）。",
        "en": "The prefix {prefix} does not belong to this node: {handle} is resolved by the node that holds "
        "it (the national root can tell which).",
    },
    "referral_title": {"zh": "由企业节点解析", "en": "Resolved by the enterprise's own node"},
    "referral_body": {
        "zh": "{handle} 由其企业自建的节点解析。该节点的地址：",
        "en": "{handle} is resolved by its enterprise's own node, at:",
    },
    "referral_open": {"zh": "在企业节点上打开", "en": "Open on the enterprise's node"},
    "referral_site": {
        "zh": "以上地址来自前缀 {prefix} 的服务站点（HS_SITE）。",
        "en": "These addresses are the service site (HS_SITE) of the prefix {prefix}.",
    },
    "unreadable_title": {"zh": "记录无法读取", "en": "The record cannot be read"},
    "unreadable_body": {
        "zh": "{handle} 的存储记录已损坏或格式未知，已记录此问题。请稍后再试或联系节点运维。",
        "en": "The stored record of {handle} is damaged or of an unknown format. "
        "Try again later or tell the node's operators.",
    },
    "internal_title": {"zh": "页面出错", "en": "Something went wrong"},
    "internal_body": {
        "zh": "生成 {handle} 的页面时出错，已记录此问题。",
        "en": "The page for {handle} could not be made; the error was logged.",
    },
}


def t(lang: str, key: str) -> str:
    """The sentence `key` in `lang` (English when a sentence lacks it)."""
    entry = STRINGS[key]
    return entry.get(lang) or entry["en"]
