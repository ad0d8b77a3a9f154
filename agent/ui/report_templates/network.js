// The network page's search: the units (JSON in #unit-data) as a table, filtered by label text.
// Labels are untrusted text: cells are filled with textContent, never as HTML.
(function () {
  const units = JSON.parse(document.getElementById("unit-data").textContent);
  const body = document.getElementById("units").tBodies[0];
  const search = document.getElementById("search");
  const shown = document.getElementById("shown");

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function link(td, href) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = td.textContent;
    td.textContent = "";
    td.appendChild(a);
  }

  const rows = units.map(function (unit) {
    const row = document.createElement("tr");
    row.dataset.unit = unit.unit;
    cell(row, unit.layer);
    link(cell(row, String(unit.unit), "num"), unit.link);
    link(cell(row, unit.label || "-"), unit.link);
    cell(row, unit.auc === null ? "-" : unit.auc.toFixed(3), "num");
    cell(row, unit.explained === null ? "-" : unit.explained ? "explained" : "unexplained");
    cell(row, unit.source || "-");
    body.appendChild(row);
    return { row: row, text: unit.label.toLowerCase() };
  });

  function filter() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    let visible = 0;
    rows.forEach(function (entry) {
      const keep = words.every(function (word) { return entry.text.indexOf(word) >= 0; });
      entry.row.hidden = !keep;
      visible += keep ? 1 : 0;
    });
    shown.textContent = visible + " of " + rows.length + " units shown";
  }

  search.addEventListener("input", filter);
  filter();
})();
