/* kdalib.book: figure popovers, and the claims page's groups and filter.
 *
 * A figure is <a class="kdalib-claim" data-kdalib-claim="ID" href="…claims.html#claim-ID">.
 * Its popover (what is measured, value and status, setting, source, the quote as text,
 * the claim's history)
 * comes from the page's <script type="application/json" id="kdalib-claims"> and is built
 * with textContent only, so no markup from a source can render. It opens on hover, on
 * keyboard focus, and on a first tap (a second tap follows the link); Escape closes it.
 */
(function () {
  "use strict";

  var POPOVER_ID = "kdalib-popover";
  var claims = null;
  var popover = null;
  var owner = null;
  var hideTimer = null;
  var lastPointer = "mouse";
  var openBeforeTap = null; /* the figure whose popover was open when the current touch began */

  function claimData() {
    if (claims === null) {
      var script = document.getElementById("kdalib-claims");
      try {
        claims = script ? JSON.parse(script.textContent) : {};
      } catch (err) {
        claims = {};
      }
    }
    return claims;
  }

  function line(parent, className, text) {
    var el = document.createElement("div");
    el.className = className;
    el.textContent = text;
    parent.appendChild(el);
    return el;
  }

  function ensurePopover() {
    if (popover) return popover;
    popover = document.createElement("div");
    popover.id = POPOVER_ID;
    popover.className = "kdalib-popover";
    popover.setAttribute("role", "tooltip");
    popover.hidden = true;
    popover.addEventListener("mouseenter", cancelHide);
    popover.addEventListener("mouseleave", scheduleHide);
    document.body.appendChild(popover);
    return popover;
  }

  function fill(anchor, data) {
    var pop = ensurePopover();
    pop.textContent = "";
    line(pop, "kdalib-pop-what", data.what);
    var head = line(pop, "kdalib-pop-value", data.value + " ");
    var badge = document.createElement("span");
    badge.className = "kdalib-badge kdalib-badge-" + data.status;
    badge.textContent = data.status;
    head.appendChild(badge);
    if (data.setting) line(pop, "kdalib-pop-setting", data.setting);
    line(pop, "kdalib-pop-source", "Source: " + data.source);
    if (data.quote) {
      line(pop, "kdalib-pop-quote", "\u201c" + data.quote + "\u201d");
      if (data.where) line(pop, "kdalib-pop-where", data.where);
    } else if (data.note) {
      line(pop, "kdalib-pop-note", data.note);
    }
    if (data.history) line(pop, "kdalib-pop-history", data.history);
    var more = document.createElement("a");
    more.className = "kdalib-pop-link";
    more.href = anchor.href;
    more.textContent = "See claim " + data.id + " \u2192";
    pop.appendChild(more);
  }

  function place(anchor) {
    var rect = anchor.getBoundingClientRect();
    var width = Math.min(420, document.documentElement.clientWidth - 16);
    popover.style.width = width + "px";
    var left = Math.max(8, Math.min(rect.left, document.documentElement.clientWidth - width - 8));
    popover.style.left = left + window.scrollX + "px";
    popover.style.top = rect.bottom + window.scrollY + 6 + "px";
    var below = popover.getBoundingClientRect();
    if (below.bottom > window.innerHeight && rect.top > below.height + 12) {
      popover.style.top = rect.top + window.scrollY - below.height - 6 + "px";
    }
  }

  function show(anchor) {
    var data = claimData()[anchor.getAttribute("data-kdalib-claim")];
    if (!data) return;
    cancelHide();
    if (owner && owner !== anchor) owner.removeAttribute("aria-describedby");
    owner = anchor;
    fill(anchor, data);
    popover.hidden = false;
    anchor.setAttribute("aria-describedby", POPOVER_ID);
    place(anchor);
  }

  function hide() {
    cancelHide();
    if (popover) popover.hidden = true;
    if (owner) owner.removeAttribute("aria-describedby");
    owner = null;
  }

  function scheduleHide() {
    cancelHide();
    hideTimer = window.setTimeout(hide, 250);
  }

  function cancelHide() {
    if (hideTimer) window.clearTimeout(hideTimer);
    hideTimer = null;
  }

  function figureOf(target) {
    return target && target.closest ? target.closest("a.kdalib-claim[data-kdalib-claim]") : null;
  }

  function setUpPopovers() {
    document.addEventListener("touchstart", function () {
      lastPointer = "touch";
      openBeforeTap = popover && !popover.hidden ? owner : null;
    }, { passive: true, capture: true });
    document.addEventListener("pointerdown", function (event) {
      lastPointer = event.pointerType || "mouse";
      if (popover && !popover.hidden && !popover.contains(event.target) && !figureOf(event.target)) hide();
    });
    document.addEventListener("mouseover", function (event) {
      var anchor = figureOf(event.target);
      if (anchor && lastPointer !== "touch") show(anchor);
    });
    document.addEventListener("mouseout", function (event) {
      var anchor = figureOf(event.target);
      if (anchor && anchor === owner && !anchor.contains(event.relatedTarget)) scheduleHide();
    });
    document.addEventListener("focusin", function (event) {
      var anchor = figureOf(event.target);
      if (anchor) show(anchor);
      else if (popover && !popover.contains(event.target)) hide();
    });
    document.addEventListener("click", function (event) {
      var anchor = figureOf(event.target);
      var touch = event.pointerType === "touch" || lastPointer === "touch";
      /* a tap focuses the figure (which opens its popover) before the click: decide on the state before */
      if (anchor && touch && openBeforeTap !== anchor) {
        event.preventDefault();
        show(anchor);
      }
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && popover && !popover.hidden) hide();
    });
    window.addEventListener("resize", function () {
      if (owner && popover && !popover.hidden) place(owner);
    });
  }

  /* The claims page: open the group holding the linked claim, and filter the cards. */
  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    var target = id && document.getElementById(id);
    if (!target) return;
    for (var el = target; el; el = el.parentElement) {
      if (el.tagName === "DETAILS") el.open = true;
    }
    target.scrollIntoView({ block: "start" });
  }

  function setUpFilter() {
    var box = document.querySelector(".kdalib-filter input");
    if (!box) return;
    var cards = Array.prototype.slice.call(document.querySelectorAll("details.kdalib-subject .kdalib-card"));
    var count = document.querySelector(".kdalib-filter-count");
    var text = cards.map(function (card) { return card.textContent.toLowerCase(); });
    var claims = cards.filter(function (card) { return card.id; }).length;
    box.addEventListener("input", function () {
      var words = box.value.toLowerCase().split(/\s+/).filter(Boolean);
      var shown = 0;
      cards.forEach(function (card, i) {
        var match = words.every(function (w) { return text[i].indexOf(w) >= 0; });
        card.hidden = !match;
        if (match && card.id) shown += 1;  // a claim's own card has its anchor; repeats in later sections do not
      });
      document.querySelectorAll("details.kdalib-subject").forEach(function (group) {
        var visible = group.querySelector(".kdalib-card:not([hidden])");
        group.hidden = words.length > 0 && !visible;
        if (words.length > 0 && visible) group.open = true;
      });
      if (count) count.textContent = words.length ? shown + " of " + claims + " claims match" : "";
    });
  }

  /* The comparison page: show only the rows the chosen model reports (a cell that is not the quiet mark). */
  function setUpMatrix() {
    var select = document.querySelector(".kdalib-matrix-controls select");
    if (!select) return;
    var tables = Array.prototype.slice.call(document.querySelectorAll("table.kdalib-matrix"));
    var count = document.querySelector(".kdalib-matrix-count");
    var models = [];
    tables.forEach(function (table) {
      var head = table.querySelector("thead tr") || table.querySelector("tr");
      Array.prototype.slice.call(head ? head.cells : [], 1).forEach(function (cell) {
        var name = cell.textContent.trim();
        if (name && models.indexOf(name) < 0) models.push(name);
      });
    });
    models.forEach(function (name) {
      var option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      select.appendChild(option);
    });
    select.addEventListener("change", function () {
      var chosen = select.value, shown = 0, total = 0;
      tables.forEach(function (table) {
        var head = table.querySelector("thead tr") || table.querySelector("tr");
        var names = Array.prototype.map.call(head ? head.cells : [], function (c) { return c.textContent.trim(); });
        var column = chosen ? names.indexOf(chosen) : -1;
        Array.prototype.forEach.call(table.querySelectorAll("tbody tr"), function (row) {
          var cell = column > 0 ? row.cells[column] : null;
          row.hidden = Boolean(chosen) && (!cell || cell.classList.contains("kdalib-absent-cell"));
          Array.prototype.forEach.call(row.cells, function (c, i) { c.classList.toggle("kdalib-chosen", i === column); });
          total += 1;
          if (!row.hidden) shown += 1;
        });
        Array.prototype.forEach.call(head ? head.cells : [], function (c, i) { c.classList.toggle("kdalib-chosen", i === column); });
      });
      if (count) count.textContent = chosen ? shown + " of " + total + " rows: what " + chosen + " reports" : "";
    });
  }

  function start() {
    setUpPopovers();
    setUpFilter();
    setUpMatrix();
    openTarget();
    window.addEventListener("hashchange", openTarget);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
