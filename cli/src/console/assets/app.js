// The Pointflow operator console: one page, hash routes, plain DOM.
// It calls the API same-origin under /v1 and the console's own endpoints
// under /console/api; the server it came from holds any credentials.

const numbers = new Intl.NumberFormat();
const POLL_MS = 2000;
const STATUSES = ["importing", "queued", "running", "completed", "completed_with_errors", "failed"];
const FINISHED = new Set(["completed", "completed_with_errors", "failed"]);

// Each route change starts a new generation: answers of an older one are dropped.
let generation = 0;
let timer = null;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// Creates an element: attrs sets properties, except data-* and aria-* (attributes);
// children are nodes or text.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("data-") || name.startsWith("aria-") || name === "scope" || name === "role") {
      node.setAttribute(name, value);
    } else {
      node[name] = value;
    }
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const num = (n) => numbers.format(n ?? 0);
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

async function call(method, path, body, headers = {}) {
  const response = await fetch(path, { method, body, headers, credentials: "same-origin" });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || text || response.statusText);
  }
  refreshed();
  return data;
}

function refreshed() {
  const stamp = document.getElementById("last-refresh");
  const now = new Date();
  stamp.dateTime = now.toISOString();
  stamp.textContent = now.toLocaleString();
}

function showError(error) {
  const banner = document.getElementById("error-banner");
  banner.replaceChildren(
    el("strong", {}, error.code || "error"),
    ": ",
    error.message || String(error),
  );
  banner.hidden = false;
}

function clearError() {
  const banner = document.getElementById("error-banner");
  banner.hidden = true;
  banner.replaceChildren();
}

// The status an operator reads: the API's word, or the cancel's progress.
function statusWord(job) {
  if (job.cancel) return job.cancel.completed_at ? "cancelled" : "cancelling";
  return job.status;
}

// Who asked, from an audit record: the caller's kind and id.
function who(audit) {
  if (!audit || !audit.caller) return "—";
  const { kind, id } = audit.caller;
  return id && id !== kind ? `${kind} ${id}` : kind;
}

function settled(job) {
  return (job.applied || 0) + (job.duplicate || 0) + (job.failed || 0) + (job.refused || 0);
}

function progressOf(job) {
  const max = Math.max(job.total || 0, 1);
  const value = FINISHED.has(job.status) ? max : Math.min(settled(job), max);
  return el("progress", { value, max, "aria-label": `${num(value)} of ${num(job.total)} settled` });
}

const COUNTS = [
  ["accepted", "Accepted", (j) => j.total],
  ["applied", "Applied", (j) => j.applied],
  ["duplicate", "Duplicate", (j) => j.duplicate],
  ["rejected", "Rejected", (j) => j.rejected],
  ["failed", "Failed", (j) => j.failed],
];

function headerRow(names) {
  return el("tr", {}, ...names.map((name) => el("th", { scope: "col" }, name)));
}

function table(id, caption, names, rows) {
  return el("table", { id }, el("caption", {}, caption), el("thead", {}, headerRow(names)), el("tbody", {}, ...rows));
}

function heading(text) {
  return el("h2", { tabIndex: -1 }, text);
}

// Runs `tick` now and every POLL_MS while the page is visible, until it
// returns false (nothing left to watch) or the route changes.
function poll(tick) {
  const mine = generation;
  const run = async () => {
    if (mine !== generation) return;
    let more = true;
    if (document.visibilityState === "visible") {
      try {
        more = (await tick(mine)) !== false;
      } catch (error) {
        if (mine === generation) showError(error);
      }
    }
    if (mine === generation && more) timer = setTimeout(run, POLL_MS);
  };
  run();
}

// ---- jobs ----

function jobRow(job) {
  const cells = COUNTS.map(([field, , value]) => el("td", { "data-field": field, className: "num" }, num(value(job))));
  const source = job.source ? job.source.replace(/^s3:\/\/[^/]+\//, "") : "API";
  return el(
    "tr",
    { "data-job-id": job.job_id },
    el("td", {}, el("a", { href: `#/jobs/${job.job_id}`, title: job.job_id, className: "mono" }, job.job_id.slice(0, 8))),
    el("td", { "data-field": "status" }, statusWord(job)),
    ...cells,
    el("td", { "data-field": "progress" }, progressOf(job)),
    el("td", { "data-field": "source" }, source),
    el("td", { "data-field": "created" }, when(job.created_at)),
  );
}

function jobsView(view) {
  const filter = el(
    "select",
    { id: "jobs-status-filter" },
    el("option", { value: "" }, "all"),
    ...STATUSES.map((s) => el("option", { value: s }, s)),
  );
  const saved = sessionStorage.getItem("jobs-status") || "";
  filter.value = saved;
  const body = el("tbody");
  const jobsTable = el(
    "table",
    { id: "jobs-table" },
    el("caption", {}, "Jobs, newest first (refreshed every 2 s)"),
    el("thead", {}, headerRow(["Job", "Status", "Accepted", "Applied", "Duplicate", "Rejected", "Failed", "Progress", "Source", "Created"])),
    body,
  );
  // The cursors of the pages shown before this one: empty on the newest page.
  const cursors = [];
  let nextCursor = null;
  const newer = el("button", { id: "jobs-newer", type: "button", hidden: true }, "Newer jobs");
  const older = el("button", { id: "jobs-older", type: "button", hidden: true }, "Older jobs");
  view.replaceChildren(
    heading("Jobs"),
    el("p", {}, el("label", { htmlFor: "jobs-status-filter" }, "Status "), filter),
    jobsTable,
    el("p", {}, newer, " ", older),
  );
  const tick = async (mine) => {
    const status = filter.value;
    const query = new URLSearchParams({ limit: "100" });
    if (status) query.set("status", status);
    if (cursors.length) query.set("cursor", cursors[cursors.length - 1]);
    const list = await call("GET", `/v1/jobs?${query}`);
    if (mine !== generation) return;
    const rows = list.jobs.map(jobRow);
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colSpan: 10 }, "No jobs"))]));
    nextCursor = list.next_cursor || null;
    older.hidden = !nextCursor;
    newer.hidden = cursors.length === 0;
  };
  const reload = () => tick(generation).catch(showError);
  filter.addEventListener("change", () => {
    sessionStorage.setItem("jobs-status", filter.value);
    cursors.length = 0;
    reload();
  });
  older.addEventListener("click", () => {
    if (nextCursor) cursors.push(nextCursor);
    reload();
  });
  newer.addEventListener("click", () => {
    cursors.pop();
    reload();
  });
  poll(tick);
}

// ---- one job ----

function reportTable(report) {
  const rows = report.lines.map((line) =>
    el(
      "tr",
      { "data-line": line.line },
      el("td", { className: "num" }, num(line.line)),
      el("td", {}, line.field),
      el("td", {}, line.message),
      el("td", { className: "mono" }, line.raw),
    ),
  );
  const caption = report.truncated ? `Lines the import rejected (the first ${num(report.lines.length)}; all of them: ${report.report})` : "Lines the import rejected";
  return table("job-report-table", caption, ["Line", "Field", "Problem", "Line as read"], rows);
}

function jobDetail(view, jobId) {
  const section = el("section", { id: "job-detail", "data-job-id": jobId });
  const report = el("div", { id: "job-report" });
  view.replaceChildren(heading(`Job ${jobId}`), section, el("h3", {}, "Error report"), report);
  let reportLoaded = false;

  const loadReport = async (job, mine) => {
    try {
      const data = await call("GET", `/console/api/jobs/${jobId}/report`);
      if (mine !== generation) return;
      report.replaceChildren(data.lines.length ? reportTable(data) : el("p", {}, "No errors"));
      reportLoaded = true;
    } catch (error) {
      if (mine !== generation) return;
      if (error.code !== "no_report") throw error;
      report.replaceChildren(el("p", {}, job.rejected > 0 ? "The error report is being written…" : "No errors"));
      reportLoaded = job.rejected === 0 && FINISHED.has(job.status);
    }
  };

  const render = (job) => {
    const fields = [
      ["status", "Status", statusWord(job)],
      ...COUNTS.map(([field, label, value]) => [field, label, num(value(job))]),
      ["deduplicated", "Collapsed repeats", num(job.deduplicated)],
      ["refused", "Refused uses", num(job.refused)],
      ["messages", "Messages", num(job.messages)],
      ["source", "Source", job.source || "API request"],
      ["created-by", "Created by", who(job.audit)],
      ["created", "Created", when(job.created_at)],
      ["completed", "Completed", when(job.completed_at)],
    ];
    if (job.cancel) {
      const c = job.cancel.counts || {};
      const reason = job.cancel.audit && job.cancel.audit.reason ? ` ("${job.cancel.audit.reason}")` : "";
      fields.push([
        "cancel",
        "Cancel",
        `asked ${when(job.cancel.requested_at)} by ${who(job.cancel.audit)}${reason}; ${num(c.reversed)} reversed, ${num(c.spent)} spent, ${num(c.skipped)} skipped`,
      ]);
    }
    const list = el("dl");
    for (const [field, label, value] of fields) {
      list.append(el("dt", {}, label), el("dd", { "data-field": field }, value));
    }
    const children = [list, el("p", {}, progressOf(job))];
    if (job.error) children.push(el("p", { id: "job-error", className: "error" }, `This file failed: ${job.error}`));
    const cancellable = (job.status === "completed" || job.status === "completed_with_errors") && !(job.cancel && job.cancel.completed_at);
    if (cancellable) {
      const button = el("button", { id: "cancel-job", type: "button", className: "danger" }, job.cancel ? "Resume the cancel" : "Cancel job…");
      button.addEventListener("click", () => askCancel(jobId));
      children.push(button);
    }
    section.replaceChildren(...children);
  };

  poll(async (mine) => {
    const job = await call("GET", `/v1/jobs/${jobId}`);
    if (mine !== generation) return;
    render(job);
    if (!reportLoaded && (job.source || FINISHED.has(job.status))) await loadReport(job, mine);
    // Nothing changes any more once the job, its report and any cancel are done.
    return !FINISHED.has(job.status) || Boolean(job.cancel && !job.cancel.completed_at) || !reportLoaded;
  });
}

function askCancel(jobId) {
  const dialog = document.getElementById("confirm-cancel");
  const reason = document.getElementById("cancel-reason");
  reason.value = "";
  dialog.returnValue = "";
  dialog.showModal();
  reason.focus();
  dialog.addEventListener(
    "close",
    async () => {
      if (dialog.returnValue !== "yes") return;
      const text = reason.value.trim();
      try {
        await call("POST", `/v1/jobs/${jobId}/cancel`, JSON.stringify(text ? { reason: text } : {}), {
          "content-type": "application/json",
        });
        clearError();
        route();
      } catch (error) {
        showError(error);
      }
    },
    { once: true },
  );
}

// ---- submit a file ----

function submitView(view) {
  const file = el("input", { id: "submit-file", type: "file", accept: ".csv,.ndjson,.jsonl,.xlsx", required: true });
  const campaign = el("input", { id: "submit-campaign", type: "text", autocomplete: "off" });
  const result = el("div", { id: "submit-result", "aria-live": "polite" });
  const form = el(
    "form",
    { id: "submit-form" },
    el("p", {}, el("label", { htmlFor: "submit-file" }, "File (CSV, NDJSON, Excel .xlsx)"), file),
    el(
      "p",
      {},
      el("label", { htmlFor: "submit-campaign" }, "Campaign (optional; default: the file's name up to its first dot)"),
      campaign,
    ),
    el("button", { id: "submit-button", type: "submit" }, "Submit"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = file.files[0];
    if (!chosen) return;
    const query = new URLSearchParams({ name: chosen.name });
    if (campaign.value.trim()) query.set("campaign", campaign.value.trim());
    result.replaceChildren(el("p", {}, `Uploading ${chosen.name}…`));
    try {
      const answer = await call("POST", `/console/api/imports?${query}`, chosen, {
        "content-type": chosen.type || "application/octet-stream",
      });
      clearError();
      result.replaceChildren(
        el(
          "p",
          {},
          `${chosen.name} was dropped at ${answer.key} (campaign ${answer.campaign ?? "—"}). Its job: `,
          el("a", { href: `#/jobs/${answer.job_id}`, "data-job-id": answer.job_id }, answer.job_id),
        ),
      );
    } catch (error) {
      result.replaceChildren();
      showError(error);
    }
  });
  view.replaceChildren(heading("Submit a file"), form, result);
}

// ---- dead letters ----

function dlqView(view) {
  const queue = el(
    "select",
    { id: "dlq-queue" },
    el("option", { value: "accruals" }, "accruals"),
    el("option", { value: "imports" }, "imports"),
  );
  queue.value = sessionStorage.getItem("dlq-queue") || "accruals";
  const count = el("output", { id: "dlq-count" }, "…");
  const body = el("tbody");
  const messages = el("tbody");
  const redrive = el("button", { id: "dlq-redrive", type: "button", className: "danger", disabled: true }, "Redrive all…");
  const refresh = el("button", { id: "dlq-refresh", type: "button" }, "Refresh");
  const result = el("p", { id: "dlq-result", "aria-live": "polite" });
  view.replaceChildren(
    heading("Dead-letter queues"),
    el("p", {}, el("label", { htmlFor: "dlq-queue" }, "Queue "), queue, " ", refresh),
    el("p", {}, "Messages: ", count),
    el(
      "table",
      { id: "dlq-table" },
      el("caption", {}, "Dead-lettered messages by job"),
      el("thead", {}, headerRow(["Job", "Messages", "Accruals"])),
      body,
    ),
    el("p", {}, redrive),
    result,
    el(
      "table",
      { id: "dlq-messages" },
      el("caption", {}, "Messages"),
      el("thead", {}, headerRow(["Message", "Job", "Sequence", "Accruals", "Deliveries", "Problem"])),
      messages,
    ),
  );
  const load = async () => {
    const mine = generation;
    const data = await call("GET", `/console/api/dlq?queue=${encodeURIComponent(queue.value)}`);
    if (mine !== generation) return;
    count.textContent = data.truncated ? `${num(data.count)} or more` : num(data.count);
    body.replaceChildren(
      ...data.jobs.map((job) =>
        el(
          "tr",
          { "data-job-id": job.job_id ?? "" },
          el("td", {}, job.job_id ? el("a", { href: `#/jobs/${job.job_id}`, className: "mono" }, job.job_id) : "not a message of this queue"),
          el("td", { className: "num" }, num(job.messages)),
          el("td", { className: "num" }, num(job.accruals)),
        ),
      ),
    );
    messages.replaceChildren(
      ...data.messages.map((m) =>
        el(
          "tr",
          {},
          el("td", { className: "mono" }, m.message_id),
          el("td", { className: "mono" }, m.job_id ?? "—"),
          el("td", { className: "num" }, m.seq ?? "—"),
          el("td", { className: "num" }, num(m.accruals)),
          el("td", { className: "num" }, m.receive_count === null ? "—" : num(m.receive_count)),
          el("td", {}, m.problem ?? ""),
        ),
      ),
    );
    redrive.disabled = data.count === 0;
  };
  const reload = () => load().catch(showError);
  queue.addEventListener("change", () => {
    sessionStorage.setItem("dlq-queue", queue.value);
    result.textContent = "";
    reload();
  });
  refresh.addEventListener("click", reload);
  redrive.addEventListener("click", () => {
    const dialog = document.getElementById("confirm-redrive");
    dialog.returnValue = "";
    dialog.showModal();
    document.getElementById("confirm-redrive-no").focus();
    dialog.addEventListener(
      "close",
      async () => {
        if (dialog.returnValue !== "yes") return;
        try {
          const moved = await call("POST", `/console/api/dlq/redrive?queue=${encodeURIComponent(queue.value)}`);
          clearError();
          const refused = moved.refused.length ? `; ${num(moved.refused.length)} refused (${moved.refused.map((r) => r.reason).join("; ")})` : "";
          result.textContent = `Redrove ${num(moved.redriven)} messages (${num(moved.accruals)} accruals, ${num(moved.import_tasks)} import tasks)${refused}.`;
          await load();
        } catch (error) {
          showError(error);
        }
      },
      { once: true },
    );
  });
  reload();
}

// ---- members ----

function memberView(view, memberId) {
  const input = el("input", { id: "member-id", type: "text", autocomplete: "off", required: true, value: memberId || "" });
  const form = el(
    "form",
    { id: "member-form", role: "search" },
    el("label", { htmlFor: "member-id" }, "Member id "),
    input,
    " ",
    el("button", { id: "member-lookup", type: "submit" }, "Look up"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) location.hash = `#/members/${encodeURIComponent(id)}`;
  });
  const results = el("div");
  view.replaceChildren(heading(memberId ? `Member ${memberId}` : "Members"), form, results);
  if (!memberId) return;
  const mine = generation;
  const path = `/v1/members/${encodeURIComponent(memberId)}`;

  const balances = async () => {
    const data = await call("GET", `${path}/balances`);
    if (mine !== generation) return null;
    const rows = Object.entries(data.details || {}).map(([type, d]) =>
      el(
        "tr",
        { "data-point-type": type },
        el("th", { scope: "row" }, type),
        el("td", { "data-field": "available", className: "num" }, num(d.available)),
        el("td", { "data-field": "pending", className: "num" }, num(d.pending)),
        el("td", { "data-field": "expiring", className: "num" }, num(d.expiring_soon)),
        el("td", { "data-field": "expired", className: "num" }, num(d.expired)),
        el("td", { "data-field": "lifetime_earned", className: "num" }, num(d.lifetime_earned)),
        el("td", { "data-field": "lifetime_used", className: "num" }, num(d.lifetime_used)),
      ),
    );
    return table(
      "balances-table",
      `Balances as of ${when(data.as_of)} (expiring: within 30 days)`,
      ["Point type", "Available", "Pending", "Expiring", "Expired", "Earned", "Used"],
      rows,
    );
  };

  const history = el("div");
  let page = 1;
  const historyPage = async (cursor) => {
    const query = new URLSearchParams({ limit: "20" });
    if (cursor) query.set("cursor", cursor);
    const data = await call("GET", `${path}/ledger?${query}`);
    if (mine !== generation) return;
    const rows = data.entries.map((e) =>
      el(
        "tr",
        {},
        el("td", {}, when(e.at)),
        el("td", {}, e.kind === "reversal" ? `reversal of ${e.reverses}` : e.kind),
        el("td", {}, e.point_type),
        el("td", { className: "num" }, num(e.amount)),
        el("td", { className: "mono" }, e.id),
        el("td", {}, e.job_id ? el("a", { href: `#/jobs/${e.job_id}`, className: "mono" }, e.job_id.slice(0, 8)) : ""),
        el("td", {}, e.reason ?? ""),
      ),
    );
    const parts = [table("history-table", `History, newest first (page ${num(page)})`, ["When", "Kind", "Point type", "Amount", "Id", "Job", "Reason"], rows)];
    const buttons = el("p");
    if (cursor) {
      const first = el("button", { id: "history-first", type: "button" }, "First page");
      first.addEventListener("click", () => {
        page = 1;
        historyPage(null).catch(showError);
      });
      buttons.append(first, " ");
    }
    if (data.next_cursor) {
      const next = el("button", { id: "history-next", type: "button" }, "Next page");
      next.addEventListener("click", () => {
        page += 1;
        historyPage(data.next_cursor).catch(showError);
      });
      buttons.append(next);
    }
    parts.push(buttons);
    history.replaceChildren(...parts);
  };

  (async () => {
    try {
      const balanceTable = await balances();
      if (!balanceTable) return;
      results.replaceChildren(balanceTable, history);
      await historyPage(null);
    } catch (error) {
      if (mine === generation) showError(error);
    }
  })();
}

// ---- routing ----

function route() {
  generation += 1;
  clearTimeout(timer);
  clearError();
  const view = document.getElementById("view");
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  const section = parts[0] || "jobs";
  const arg = parts.slice(1).join("/");
  for (const link of document.querySelectorAll("nav a")) {
    link.removeAttribute("aria-current");
  }
  const nav = document.getElementById(`nav-${section}`);
  if (nav) nav.setAttribute("aria-current", "page");
  if (section === "jobs" && arg) jobDetail(view, decodeURIComponent(arg));
  else if (section === "jobs") jobsView(view);
  else if (section === "submit") submitView(view);
  else if (section === "dlq") dlqView(view);
  else if (section === "members") memberView(view, arg ? decodeURIComponent(arg) : "");
  else view.replaceChildren(heading("Not found"), el("p", {}, "No such page. "), el("a", { href: "#/jobs" }, "Jobs"));
  const title = view.querySelector("h2");
  if (title && document.activeElement !== document.body) title.focus();
}

async function showInfo() {
  try {
    const info = await call("GET", "/console/api/info");
    const stack = info.stack ? `stack ${info.stack}` : "API";
    const where = info.backend === "aws" && info.api !== "local" ? `${stack} at ${info.api}` : `${info.backend} backend`;
    document.getElementById("backend-info").textContent = `${where} · pointflow ${info.version} ·`;
  } catch (error) {
    showError(error);
  }
}

window.addEventListener("hashchange", route);
showInfo();
route();
