// The index table: sort by a clicked column; filter by minimum AUC, maximum p, verdict, polysemantic.
(function () {
  const table = document.getElementById("units");
  const body = table.tBodies[0];
  const minAuc = document.getElementById("min-auc");
  const polyOnly = document.getElementById("poly-only");
  const maxP = document.getElementById("max-p");
  const verdict = document.getElementById("verdict");
  const shown = document.getElementById("shown");

  function key(row, column, type) {
    const cell = row.cells[column];
    const text = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
    return type === "num" ? parseFloat(text) || 0 : text.toLowerCase();
  }

  table.querySelectorAll("th").forEach(function (th, column) {
    if (th.dataset.type === "none") return;
    th.addEventListener("click", function () {
      const ascending = th.dataset.dir !== "asc";
      table.querySelectorAll("th").forEach(function (other) { delete other.dataset.dir; });
      th.dataset.dir = ascending ? "asc" : "desc";
      const rows = Array.from(body.rows).sort(function (a, b) {
        const x = key(a, column, th.dataset.type), y = key(b, column, th.dataset.type);
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });

  function filter() {
    const minimum = parseFloat(minAuc.value) || 0;
    let visible = 0;
    Array.from(body.rows).forEach(function (row) {
      const pMax = maxP.value === "" ? 1 : parseFloat(maxP.value);
      const keep = parseFloat(row.dataset.auc) >= minimum && (!polyOnly.checked || row.dataset.poly === "1")
        && parseFloat(row.dataset.p) <= pMax && (verdict.value === "" || row.dataset.explained === verdict.value);
      row.hidden = !keep;
      visible += keep ? 1 : 0;
    });
    shown.textContent = visible + " of " + body.rows.length + " units shown";
  }

  minAuc.addEventListener("input", filter);
  polyOnly.addEventListener("change", filter);
  maxP.addEventListener("input", filter);
  verdict.addEventListener("change", filter);
  filter();
})();
