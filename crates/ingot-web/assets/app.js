// ingot dashboard: keeps the panels current from the daemon's events
// (Server-Sent Events on /events). Each panel names the fragment it is
// rendered from (data-src); an event refetches the panels it concerns,
// at most once per 50 ms each. No reload, no state kept here.
(function () {
  "use strict";
  var pending = {};
  function refresh(id) {
    if (pending[id]) return;
    pending[id] = setTimeout(function () {
      var el = document.getElementById(id);
      delete pending[id];
      if (!el || !el.dataset.src) return;
      fetch(el.dataset.src, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          // A form being typed into is left alone until it loses focus.
          if (el.contains(document.activeElement) && document.activeElement.tagName === "INPUT") {
            refresh(id);
            return;
          }
          el.innerHTML = html;
          el.dataset.updated = String(Date.now());
        })
        .catch(function () { /* the next event retries */ });
    }, 50);
  }
  function all() { refresh("services"); refresh("ledger"); refresh("dora"); }
  document.addEventListener("DOMContentLoaded", function () {
    if (!document.getElementById("services") || !window.EventSource) return;
    var live = document.getElementById("live");
    var es = new EventSource("/events");
    es.onopen = function () {
      if (live) { live.textContent = "Live: following the daemon's events."; live.className = "note good"; }
      all();
    };
    es.onerror = function () {
      if (live) { live.textContent = "Not live: the daemon's events are unreachable; retrying."; live.className = "note bad"; }
    };
    es.addEventListener("replica", function () { refresh("services"); });
    es.addEventListener("pool", function () { refresh("services"); });
    es.addEventListener("ledger", all);
    es.addEventListener("policy", function () { refresh("ledger"); });
    es.addEventListener("resync", all);
  });
})();
