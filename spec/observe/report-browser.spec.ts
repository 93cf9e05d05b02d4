// The HTML report in a real browser: Debian's Chromium, headless, through playwright-core.
// It counts the bars the page draws and keeps a screenshot in spec-output/. Chromium is
// installed by the test set-up (scripts/ensure-test-tools.sh, npm test's pretest, which runs
// scripts/install-chromium.sh); a spec never installs anything. Without it the spec is
// skipped with the reason printed.
import assert from 'node:assert/strict';
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

/** Whether Chromium is there; or why not, and how to get it. */
function findChromium(): { ok: true } | { ok: false; why: string } {
  if (existsSync(CHROMIUM)) return { ok: true };
  return {
    ok: false,
    why: `${CHROMIUM} is not installed: run bash scripts/ensure-test-tools.sh (npm test does), or install Debian's chromium package`,
  };
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
