"""visualize/index.html: every figure of one `cnnexp visualize` call, in sections, with captions."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Gallery:
    folder: Path
    title: str
    sections: dict[str, list[tuple[Path, str]]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, section: str, image: Path, caption: str) -> None:
        self.sections.setdefault(section, []).append((image, caption))

    def note(self, section: str, text: str) -> None:
        """A line of text under a section's heading (what was done, or why nothing was)."""
        self.notes[section] = text
        self.sections.setdefault(section, [])

    def write(self) -> Path:
        parts = [
            "<!doctype html>", "<html><head><meta charset='utf-8'>", f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}"
            "figure{margin:1em 0}img{max-width:100%;border:1px solid #ddd}"
            "figcaption{color:#444;font-size:.9em}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for section, figures in self.sections.items():
            parts.append(f"<h2>{html.escape(section)}</h2>")
            if section in self.notes:
                parts.append(f"<p>{html.escape(self.notes[section])}</p>")
            for image, caption in figures:
                source = html.escape(image.relative_to(self.folder).as_posix())
                parts.append(f"<figure><img src='{source}' alt='{html.escape(caption)}'>"
                             f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</body></html>")
        path = self.folder / "index.html"
        path.write_text("\n".join(parts) + "\n")
        return path
