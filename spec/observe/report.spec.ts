// The HTML report, read as text: a bar per action, failures marked, a row per host, and
// nothing that reaches the network. report-browser.spec.ts loads it in Chromium.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type { RakeEvent } from '../../src/client/events.js';
import { renderReport } from '../../src/observe/report.js';
import { hostStats } from '../../src/observe/summary.js';
import { buildTimeline } from '../../src/observe/timeline.js';
import { RECORDED, recordRun } from './support.js';

const count = (text: string, re: RegExp) => [...text.matchAll(re)].length;

describe('renderReport', { timeout: 60_000 }, () => {
  let events: RakeEvent[] = [];
  let html = '';
  before(async () => {
    events = await recordRun();
    html = renderReport(events, { title: 'fixture <run> & co' });
  });

  it('draws one bar per action and marks the failed ones', () => {
    assert.equal(count(html, /<rect class="bar[ "]/g), RECORDED.actions);
    assert.equal(count(html, /<rect class="bar failed"/g), RECORDED.failed);
  });

  it('tabulates every host, with its busy share and bytes', () => {
    const stats = hostStats(buildTimeline(events));
    assert.equal(stats.length, 2);
    for (const s of stats) {
      assert.ok(html.includes(`id="host-${s.host.replace(/[^A-Za-z0-9_-]/g, '_')}"`), s.host);
      assert.ok(s.busyShare > 0 && s.busyShare <= 1, `busy share of ${s.host}`);
    }
    assert.equal(
      stats.reduce((n, s) => n + s.actions, 0),
      RECORDED.actions,
    );
    assert.ok(stats.reduce((n, s) => n + s.uploadBytes, 0) >= 6000, 'requirements went up');
    assert.ok(stats.reduce((n, s) => n + s.downloadBytes, 0) >= 9000, 'outputs came down');
  });

  it('is self-contained: no scripts, no links or URLs', () => {
    assert.doesNotMatch(html, /https?:\/\//);
    assert.doesNotMatch(html, /<script|<link|<img|@import|url\(/i);
  });

  it('escapes what it prints', () => {
    assert.ok(html.includes('<title>fixture &lt;run&gt; &amp; co</title>'));
    assert.ok(html.includes('&gt;&amp;2; exit 3'), 'the command `echo broken >&2; exit 3`');
  });

  it("shows a failed action's message and stderr", () => {
    assert.match(html, /<h2>Failures<\/h2>/);
    assert.match(
      html,
      /<section class="failure" id="failed-check_1">[\s\S]*exited with status 3 on 127\.0\.0\.1:\d+[\s\S]*<pre class="stderr">broken\n<\/pre>/,
    );
  });

  it('counts in words that agree with their number', () => {
    assert.match(html, /2 actionsets · 2 hosts ·/);
    // Up to the first actionset's end: one actionset, whose actions ran on one host or two.
    const end = events.findIndex((e) => e.type === 'actionset-done');
    const first = renderReport(events.slice(0, end + 1));
    assert.match(first, / · 1 actionset · [12] hosts? ·/);
    assert.doesNotMatch(first, /\b1 (actionsets|hosts|actions)\b/);
  });

  it('renders an empty run without failing', () => {
    const empty = renderReport([]);
    assert.match(empty, /No action reached a host/);
    assert.equal(count(empty, /<rect class="bar/g), 0);
  });
});
