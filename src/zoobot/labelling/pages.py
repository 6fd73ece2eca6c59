"""The labelling page's HTML: Jinja templates with inline CSS, no script, nothing fetched from elsewhere."""

from __future__ import annotations

import re

STYLE = """
:root { --bg:#0d1117; --panel:#161b22; --line:#30363d; --text:#e6edf3; --muted:#8b949e;
        --accent:#58a6ff; --good:#3fb950; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--text);
       font:16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
header { display:flex; align-items:center; gap:1.5rem; padding:.7rem 1.5rem;
         border-bottom:1px solid var(--line); background:var(--panel); }
header .brand { font-weight:700; letter-spacing:.02em; }
header .who { margin-left:auto; color:var(--muted); }
header a { color:var(--accent); text-decoration:none; }
.progress { flex:1; max-width:34rem; }
.progress .bar { height:.55rem; background:var(--line); border-radius:.3rem; overflow:hidden; }
.progress .bar span { display:block; height:100%; background:var(--good); }
.progress .caption { font-size:.8rem; color:var(--muted); margin-top:.2rem; }
main { display:flex; gap:2rem; padding:1.5rem; align-items:flex-start; flex-wrap:wrap; }
figure { margin:0; }
figure img { width:min(72vh, 90vw); height:min(72vh, 90vw); display:block; border-radius:.4rem;
             border:1px solid var(--line); background:#000; }
figure figcaption { color:var(--muted); font-size:.85rem; margin-top:.4rem; }
.panel { flex:1; min-width:18rem; max-width:30rem; background:var(--panel);
         border:1px solid var(--line); border-radius:.5rem; padding:1.2rem 1.4rem; }
.panel h1 { font-size:1.35rem; margin:.2rem 0 1rem; }
.answers { display:flex; flex-direction:column; gap:.55rem; }
.answers button { font:inherit; text-align:left; padding:.7rem 1rem; border-radius:.4rem; cursor:pointer;
                  background:#21262d; color:var(--text); border:1px solid var(--line); }
.answers button:hover, .answers button:focus { border-color:var(--accent); background:#1f2a3a; }
.answered { list-style:none; padding:0; margin:0 0 1rem; color:var(--muted); font-size:.9rem; }
.answered li::before { content:"\\2713  "; color:var(--good); }
.step { color:var(--muted); font-size:.85rem; }
.notice { background:#12261e; border:1px solid #238636; padding:.5rem .8rem; border-radius:.4rem; }
.error { background:#2d1517; border:1px solid #da3633; padding:.5rem .8rem; border-radius:.4rem; }
.restart { display:inline-block; margin-top:1rem; color:var(--accent); font-size:.9rem; }
table { border-collapse:collapse; margin-top:.5rem; }
td, th { padding:.25rem .9rem .25rem 0; text-align:left; }
th { color:var(--muted); font-weight:500; }
input[type=text] { font:inherit; padding:.55rem .7rem; border-radius:.4rem; width:100%;
                   background:#0d1117; color:var(--text); border:1px solid var(--line); margin:.4rem 0 .8rem; }
.primary { font:inherit; padding:.55rem 1.2rem; border-radius:.4rem; border:0; cursor:pointer;
           background:#238636; color:#fff; }
"""

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}zoobot labelling{% endblock %}</title>
<style>{{ style }}</style></head>
<body>
<header>
  <span class="brand">zoobot &middot; labelling</span>
  {% if progress %}
  <div class="progress">
    <div class="bar"><span style="width: {{ percent_complete }}%"></span></div>
    <div class="caption">{{ progress.n_complete }} of {{ progress.n_requested }} requested galaxies complete
      ({{ progress.votes_needed }} vote{{ '' if progress.votes_needed == 1 else 's' }} each)
      &middot; <a href="/progress">progress</a></div>
  </div>
  {% endif %}
  {% if labeller %}<span class="who">{{ labeller }} &middot; <a href="/name">not you?</a></span>{% endif %}
</header>
<main>{% block main %}{% endblock %}</main>
</body></html>
"""

LABEL = """{% extends "base.html" %}
{% block title %}Galaxy {{ galaxy }} &middot; zoobot labelling{% endblock %}
{% block main %}
<figure>
  <img src="{{ url_for('image', galaxy=galaxy) }}" alt="galaxy {{ galaxy }}">
  <figcaption>{{ galaxy }} &middot; {{ votes_so_far }} of {{ progress.votes_needed }} votes so far</figcaption>
</figure>
<section class="panel">
  {% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
  {% if answered %}
  <ol class="answered">{% for question, answer in answered %}<li>{{ question }}: {{ answer }}</li>{% endfor %}</ol>
  {% endif %}
  <div class="step">Question {{ answered|length + 1 }}</div>
  <h1>{{ question_text }}</h1>
  <form method="post" action="{{ url_for('label') }}" class="answers">
    <input type="hidden" name="galaxy" value="{{ galaxy }}">
    {% for column in answers %}<input type="hidden" name="a" value="{{ column }}">{% endfor %}
    {% for column, text in choices %}
    <button type="submit" name="a" value="{{ column }}">{{ text }}</button>
    {% endfor %}
  </form>
  {% if answered %}<a class="restart" href="{{ url_for('label', galaxy=galaxy) }}">start this galaxy again</a>{% endif %}
</section>
{% endblock %}
"""

DONE = """{% extends "base.html" %}
{% block main %}
<section class="panel">
  {% if notice %}<p class="notice">{{ notice }}</p>{% endif %}
  <h1>Nothing left for you to classify</h1>
  <p>Every requested galaxy has {{ progress.votes_needed }} votes or yours. New galaxies appear
     here after the next <code>zoobot run</code> requests them.</p>
  <a class="restart" href="{{ url_for('progress_page') }}">see the progress</a>
</section>
{% endblock %}
"""

NAME = """{% extends "base.html" %}
{% block main %}
<section class="panel">
  <h1>Who is classifying?</h1>
  {% if error %}<p class="error">{{ error }}</p>{% endif %}
  <p>Your name keeps your votes apart from everyone else's: one vote per person per galaxy.</p>
  <form method="post" action="{{ url_for('name') }}">
    <label for="name">Name</label>
    <input type="text" id="name" name="name" value="{{ name or '' }}" maxlength="40" autofocus required>
    <button class="primary" type="submit">Start classifying</button>
  </form>
</section>
{% endblock %}
"""

PROGRESS = """{% extends "base.html" %}
{% block main %}
<section class="panel">
  <h1>Progress</h1>
  <p>{{ progress.n_requested }} galaxies requested, {{ progress.n_complete }} complete
     ({{ progress.votes_needed }} votes each), {{ progress.n_open }} still open.</p>
  <table><tr><th>votes so far</th><th>galaxies</th></tr>
  {% for votes, n in progress.votes_histogram.items() %}
  <tr><td>{{ votes }}{% if votes == progress.votes_needed %} (complete){% endif %}</td><td>{{ n }}</td></tr>
  {% endfor %}</table>
  {% if progress.votes_by_labeller %}
  <table><tr><th>labeller</th><th>votes</th></tr>
  {% for who, n in progress.votes_by_labeller.items() %}<tr><td>{{ who }}</td><td>{{ n }}</td></tr>{% endfor %}
  </table>
  {% endif %}
  <a class="restart" href="{{ url_for('label') }}">back to classifying</a>
</section>
{% endblock %}
"""

ERROR = """{% extends "base.html" %}
{% block title %}{{ code }} {{ name }}{% endblock %}
{% block main %}
<section class="panel">
  <h1>{{ code }} {{ name }}</h1>
  <p class="error">{{ description }}</p>
  <a class="restart" href="/label">back to classifying</a>
</section>
{% endblock %}
"""

TEMPLATES = {
    "base.html": BASE, "label.html": LABEL, "done.html": DONE, "name.html": NAME,
    "progress.html": PROGRESS, "error.html": ERROR,
}


def readable(name: str) -> str:
    """A schema name as words: 't01_smooth_or_features' -> 'Smooth or features', 'featured-or-disk' -> 'Featured or disk'."""
    words = re.sub(r"^[at]\d+_", "", name).replace("_", " ").replace("-", " ").strip()
    return words[:1].upper() + words[1:]
