// The HTML report in a real browser: Debian's Chromium, headless, through playwright-core.
// It counts the bars the page draws and keeps a screenshot in spec-output/. Chromium is
// installed by scripts/install-chromium.sh when missing; if that cannot be done, the spec
// is skipped with the reason printed.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { renderReport } from '../../src/observe/report.js';
import { RECORDED, recordRun, SPEC_OUTPUT } from './support.js';

const CHROMIUM = '/usr/bin/chromium';
const INSTALL = new URL('../../scripts/install-chromium.sh', import.meta.url).pathname;

/** Chromium's path, installing it if needed; or why it cannot be had. */
function findChromium(): { ok: true } | { ok: false; why: string } {
  if (existsSync(CHROMIUM)) return { ok: true };
  const r = spawnSync('bash', [INSTALL], { encoding: 'utf8', timeout: 600_000 });
  if (r.status === 0 && existsSync(CHROMIUM)) return { ok: true };
  const why = (r.stderr || r.error?.message || `exit status ${r.status}`).trim().split('\n').pop();
  return { ok: false, why: `scripts/install-chromium.sh could not install chromium: ${why}` };
}

const found = findChromium();
if (!found.ok) process.stdout.write(`# skipping the report browser spec: ${found.why}\n`);

describe('the HTML report in headless Chromium', { timeout: 120_000 }, () => {
  it('draws one bar per action, marks the failure, and loads nothing from the network', {
    skip: found.ok ? false : found.why,
  }, async () => {
    const events = await recordRun();
    await mkdir(SPEC_OUTPUT, { recursive: true });
    const page = join(SPEC_OUTPUT, 'report.html');
    await writeFile(page, renderReport(events, { title: 'rake-ts report spec' }));

    const profile = await mkdtemp(join(tmpdir(), 'rake-chromium-'));
    // A fresh profile each time: nothing carried over from another run of the browser.
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 60_000,
      viewport: { width: 1200, height: 800 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    try {
      const tab = browser.pages()[0] ?? (await browser.newPage());
      const requests: string[] = [];
      tab.on('request', (r) => requests.push(r.url()));
      await tab.goto(pathToFileURL(page).href, { waitUntil: 'load', timeout: 30_000 });

      assert.equal(await tab.locator('svg.timeline rect.bar').count(), RECORDED.actions);
      assert.equal(await tab.locator('svg.timeline rect.bar.failed').count(), RECORDED.failed);
      assert.equal(await tab.locator('table.hosts tbody tr').count(), 2);
      const box = await tab.locator('svg.timeline').boundingBox();
      assert.ok(box !== null && box.width > 500 && box.height > 40, 'the timeline is drawn');
      const widths = await tab
        .locator('svg.timeline rect.bar')
        .evaluateAll((rects) =>
          rects.map((r) => (r as unknown as { getBBox(): { width: number } }).getBBox().width),
        );
      assert.ok(
        widths.every((w) => w >= 2),
        'every bar is visible',
      );
      assert.deepEqual(
        requests.filter((u) => !u.startsWith('file:') && !u.startsWith('data:')),
        [],
        'the page asks for nothing beyond itself',
      );

      const shot = join(SPEC_OUTPUT, 'report.png');
      await tab.screenshot({ path: shot, fullPage: true });
      assert.ok(existsSync(shot));
      process.stdout.write(`# screenshot: ${shot}\n`);
    } finally {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    }
  });
});
