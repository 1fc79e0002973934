// Manual browser check of notebook 06's live explorer (not run by CI or pytest).
//
// Opens the explorer notebook in JupyterLab in headless Chromium, runs all cells from the Run
// menu, then changes widgets like a user would -- the label-proportion slider (arrow key), the
// test-image slider (typed into its readout), the method dropdown -- and checks that each change
// updates the status line, the metrics table and the figure, and that the TRM-ML switches grey
// out for a baseline. Screenshots before/after go to <screenshot dir>. Exit 0 = passed.
//
// To repeat (Debian, from the repository root; the server must be stopped afterwards):
//   REPO=$PWD
//   apt-get update && apt-get install -y chromium
//   (cd /tmp/pw && npm init -y && npm install playwright-core)
//   mkdir -p /tmp/lab /tmp/shots
//   HF_HUB_OFFLINE=1 .venv/bin/papermill --prepare-only -p smoke True -p report_dir /tmp/lab/report \
//       notebooks/06_explorer.ipynb /tmp/lab/06_explorer_smoke.ipynb
//   (cd /tmp/lab && HF_HUB_OFFLINE=1 MPLBACKEND=Agg $REPO/.venv/bin/jupyter lab \
//       --allow-root --no-browser --ip 127.0.0.1 --port 8899 --ServerApp.token='' \
//       --ServerApp.password='' --ServerApp.root_dir=/tmp/lab &)   # note its PID
//   NODE_PATH=/tmp/pw/node_modules node tests/manual/explorer_browser_check.js \
//       http://127.0.0.1:8899/lab/tree/06_explorer_smoke.ipynb /tmp/shots
//   kill <jupyter lab PID>
const { chromium } = require("playwright-core");
const fs = require("fs");
const os = require("os");
const path = require("path");

const url = process.argv[2];
const shots = process.argv[3];
if (!url || !shots) {
  console.error("usage: node explorer_browser_check.js <lab url of the notebook> <screenshot dir>");
  process.exit(2);
}
const log = (...a) => console.log(new Date().toISOString().slice(11, 19), ...a);

(async () => {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "chromium-profile-"));
  // A fresh profile folder (Playwright passes it as --user-data-dir).
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1400, height: 1000 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const page = browser.pages()[0] || await browser.newPage();
  page.on("pageerror", (e) => log("page error:", e.message));
  await page.goto(url, { waitUntil: "domcontentloaded" });
  await page.waitForSelector(".jp-Notebook", { timeout: 120000 });
  // Wait for the kernel: a Run All sent before it is up is lost.
  await page.locator(".jp-StatusBar-TextItem", { hasText: "Python 3 (ipykernel) | Idle" })
    .waitFor({ timeout: 120000 });
  const news = page.locator(".jp-toast-button:text-is('No')");
  if (await news.count()) await news.first().click();
  log("notebook open; running all cells from the Run menu");
  await page.click(".lm-MenuBar-itemLabel:text-is('Run')");
  await page.click(".lm-Menu-itemLabel:text-is('Run All Cells')");

  // The last cell displays the explorer; its figure is an <img> inside the widget tree.
  const ui = page.locator(".jp-OutputArea-output .widget-vbox").filter({ hasText: "label proportion p" }).last();
  await ui.waitFor({ timeout: 600000 });
  const status = ui.locator(".widget-html").nth(1);
  const table = ui.locator("table.trm-explorer-table");
  const img = ui.locator("img").first();
  await img.waitFor({ timeout: 300000 });
  await page.waitForFunction(() => {
    const im = [...document.querySelectorAll(".widget-vbox img")].pop();
    return im && im.naturalWidth > 0;
  }, null, { timeout: 300000 });
  const snapshot = async () => ({
    status: (await status.innerText()).trim(),
    rows: (await table.locator("tbody tr td:first-child").allInnerTexts()).map((s) => s.trim()),
    img: await img.getAttribute("src"),
    truth: (await ui.locator(".widget-html").first().innerText()).trim(),
  });
  const before = await snapshot();
  log("before:", before.status, "|", before.truth, "| rows:", before.rows.join(" / "));
  await ui.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, "explorer_before.png") });
  await ui.screenshot({ path: path.join(shots, "explorer_widget_before.png") });

  // 1) label proportion: focus the slider handle and press the right arrow (one step: next p).
  const handle = ui.locator(".widget-hslider").first().locator(".noUi-handle");
  await handle.focus();
  await page.keyboard.press("ArrowRight");
  log("pressed ArrowRight on the proportion slider; waiting for the view to update");
  await page.waitForFunction((prev) => {
    const box = [...document.querySelectorAll(".widget-vbox")].filter((b) => b.innerText.includes("label proportion p")).pop();
    const st = box && box.querySelectorAll(".widget-html")[1];
    return st && st.innerText.trim() !== prev && !st.innerText.includes("…");
  }, before.status, { timeout: 300000 });
  const mid = await snapshot();
  log("after p change:", mid.status, "| rows:", mid.rows.join(" / "),
      "| figure changed:", mid.img !== before.img);

  // 2) test image: type a new value into the image slider's editable readout.
  const readout = ui.locator(".widget-hslider").filter({ hasText: "test image" }).locator(".widget-readout");
  await readout.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.type("5");
  await page.keyboard.press("Enter");
  await page.waitForFunction((prev) => {
    const box = [...document.querySelectorAll(".widget-vbox")].filter((b) => b.innerText.includes("label proportion p")).pop();
    const st = box && box.querySelectorAll(".widget-html")[1];
    return st && st.innerText.trim() !== prev && !st.innerText.includes("…");
  }, mid.status, { timeout: 300000 });
  const after = await snapshot();
  log("after image change:", after.status, "|", after.truth, "| figure changed:", after.img !== mid.img);

  // 3) method: pick DualCoOp in the dropdown; the TRM-ML switches must grey out.
  await ui.locator("select").selectOption({ label: "DualCoOp" });
  await page.waitForFunction(() => {
    const box = [...document.querySelectorAll(".widget-vbox")].filter((b) => b.innerText.includes("label proportion p")).pop();
    const st = box && box.querySelectorAll(".widget-html")[1];
    return st && st.innerText.startsWith("DualCoOp");
  }, null, { timeout: 300000 });
  const kdDisabled = await ui.locator(".widget-checkbox input").first().isDisabled();
  const final = await snapshot();
  log("after method change:", final.status, "| rows:", final.rows.join(" / "), "| kd disabled:", kdDisabled);
  await ui.scrollIntoViewIfNeeded();
  await page.screenshot({ path: path.join(shots, "explorer_after.png") });
  await ui.screenshot({ path: path.join(shots, "explorer_widget_after.png") });

  const ok = mid.status.includes("p=20%") && mid.img !== before.img && after.img !== mid.img &&
             after.status.includes("image 5") && final.status.startsWith("DualCoOp") && kdDisabled;
  log(ok ? "BROWSER CHECK PASSED" : "BROWSER CHECK FAILED");
  await browser.close();
  fs.rmSync(profile, { recursive: true, force: true });
  process.exit(ok ? 0 : 1);
})().catch(async (e) => { console.error(e); process.exit(2); });
