/* The public roadworks map (Baustellenkarte).
 *
 * Reads its settings from <body data-config>, asks the public API for the works of the
 * chosen days (following its cursors), lists them (one button per work: the keyboard way
 * in) and draws their footprints in the colour of their traffic impact. Enter on a work,
 * or a click on its shape, opens the detail panel: what, who, until when, detour, contact.
 * Without a configured tile URL the map has a plain background; without Leaflet at all
 * the list still works. All text from the API is inserted as text, never as HTML.
 */
(function () {
  "use strict";

  var config = JSON.parse(document.body.getAttribute("data-config") || "{}");
  var IMPACT = {
    closure: { label: "Vollsperrung", color: "#c62828" },
    restriction: { label: "Einschränkung", color: "#e65100" },
    minor: { label: "geringe Beeinträchtigung", color: "#f9a825" }
  };
  var RANGES = { heute: 0, "2wochen": 13, "3monate": "3m" };
  var PAGE_SIZE = 500;

  var el = function (id) { return document.getElementById(id); };
  // Leaflet inserts a string tooltip or popup as HTML: hand it an element holding text.
  var textNode = function (text) {
    var span = document.createElement("span");
    span.textContent = text;
    return span;
  };
  var list = el("liste");
  var statusLine = el("status");
  var detail = el("detail");

  var state = {
    works: [], byRef: {}, shapes: {}, selected: null, openerRef: null, loadId: 0, query: null,
    fitted: false
  };
  var timer = null;
  var map = null;
  var worksLayer = null;
  var highlightLayer = null;

  // -- dates (ISO strings, calendar arithmetic in UTC so no time zone shifts days) -------

  function parseDay(text) {
    var p = text.split("-");
    return new Date(Date.UTC(+p[0], +p[1] - 1, +p[2]));
  }
  function isoDay(d) { return d.toISOString().slice(0, 10); }
  function germanDay(text) {
    var p = text.split("-");
    return p[2] + "." + p[1] + "." + p[0];
  }
  function lastDay(first, range) {
    var d = parseDay(first);
    var span = RANGES[range];
    if (span === "3m") {
      var end = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth() + 3, d.getUTCDate()));
      end.setUTCDate(end.getUTCDate() - 1);
      return isoDay(end);
    }
    d.setUTCDate(d.getUTCDate() + span);
    return isoDay(d);
  }

  // -- map -------------------------------------------------------------------------------

  function setUpMap() {
    var container = el("karte");
    if (!window.L) {
      container.classList.add("ohne-kacheln");
      showMapNote("Die Karte konnte nicht geladen werden; die Liste zeigt alle Baustellen.");
      return;
    }
    map = L.map(container, { keyboard: true, zoomControl: true, attributionControl: true });
    var tiles = config.tiles || {};
    if (tiles.url) {
      L.tileLayer(tiles.url, {
        attribution: tiles.attribution || "", maxZoom: tiles.maxZoom || 19
      }).addTo(map);
    } else {
      container.classList.add("ohne-kacheln");
      showMapNote("Ohne Hintergrundkarte");
    }
    map.attributionControl.setPrefix("Leaflet");
    worksLayer = L.featureGroup().addTo(map);
    highlightLayer = L.featureGroup().addTo(map);
    if (config.bounds) { map.fitBounds(config.bounds); } else { map.setView([50.1, 8.76], 13); }
  }

  function showMapNote(text) {
    var note = el("karte-hinweis");
    note.textContent = text;
    note.hidden = false;
  }

  function drawWorks(works) {
    state.shapes = {};
    if (!map) { return; }
    worksLayer.clearLayers();
    works.forEach(function (w) {
      var impact = IMPACT[w.impact] || IMPACT.minor;
      var shape = L.geoJSON(w.geometry, {
        style: function () {
          return {
            // a wide outline in the impact colour: a few metres of street stay visible
            // (and recognisable) at city zoom
            color: impact.color, weight: 4, opacity: 0.9, fillColor: impact.color,
            fillOpacity: 0.6,
            className: "werk-form werk-form-" + w.impact
          };
        }
      });
      shape.bindTooltip(textNode(w.streets.join(", ") + ": " + w.title + " (" + impact.label + ")"));
      shape.on("click", function () { openDetail(w.reference, false); });
      shape.addTo(worksLayer);
      state.shapes[w.reference] = shape;
    });
    if (!state.fitted && works.length && !state.selected) {  // first view: where the works are
      state.fitted = true;
      map.fitBounds(worksLayer.getBounds(), { maxZoom: 16, padding: [30, 30] });
    }
  }

  function panelPadding() {
    // keep the selection clear of the detail panel when it floats over the map
    var wide = window.getComputedStyle(detail).position === "absolute";
    return wide ? { paddingTopLeft: [30, 30], paddingBottomRight: [detail.offsetWidth + 40, 30] }
      : { padding: [30, 30] };
  }

  // -- loading ---------------------------------------------------------------------------

  function currentRange() {
    var checked = document.querySelector("input[name=zeitraum]:checked");
    return checked ? checked.value : "heute";
  }

  function describe(count, first, last, text) {
    var what = count === 1 ? "1 Baustelle" : count + " Baustellen";
    var when = first === last ? "am " + germanDay(first)
      : "vom " + germanDay(first) + " bis " + germanDay(last);
    return what + " " + when + (text ? " für „" + text + "“" : "");
  }

  function load() {
    window.clearTimeout(timer);
    var first = el("ab").value || config.today;
    var last = lastDay(first, currentRange());
    var text = el("suche").value.trim();
    if (text.length === 1) {
      statusLine.textContent = "Bitte mindestens zwei Zeichen eingeben.";
      return;
    }
    var query = [first, last, text].join("|");
    if (query === state.query) { return; }  // shown already (or on its way)
    state.query = query;
    var loadId = ++state.loadId;
    list.setAttribute("aria-busy", "true");
    list.setAttribute("data-state", "loading");
    statusLine.textContent = "Baustellen werden geladen …";
    var params = new URLSearchParams({ from: first, to: last, limit: String(PAGE_SIZE) });
    if (text) { params.set("q", text); }
    fetchAll(config.api + "?" + params.toString(), []).then(function (works) {
      if (loadId !== state.loadId) { return; }  // a newer search is under way
      state.works = works;
      state.byRef = {};
      works.forEach(function (w) { state.byRef[w.reference] = w; });
      renderList(works);
      drawWorks(works);
      statusLine.textContent = describe(works.length, first, last, text);
      list.setAttribute("aria-busy", "false");
      list.setAttribute("data-state", "ready");
    }).catch(function (err) {
      if (loadId !== state.loadId) { return; }
      state.query = null;  // try again on the next search
      statusLine.textContent = "Die Baustellen konnten nicht geladen werden: " + err.message;
      list.setAttribute("aria-busy", "false");
      list.setAttribute("data-state", "error");
    });
  }

  function getJson(url) {
    return fetch(url, { headers: { Accept: "application/json" } }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) { throw new Error(body.message || ("HTTP " + r.status)); }
        return body;
      });
    });
  }

  function fetchAll(url, acc) {
    return getJson(url).then(function (page) {
      var all = acc.concat(page.items);
      if (!page.next_cursor) { return all; }
      var next = new URL(url, window.location.href);
      next.searchParams.set("cursor", page.next_cursor);
      return fetchAll(next.pathname + next.search, all);
    });
  }

  // -- list ------------------------------------------------------------------------------

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    if (text) { s.textContent = text; }
    return s;
  }

  function renderList(works) {
    var focused = document.activeElement;
    var focusedRef = focused && focused.classList.contains("werk-knopf")
      ? focused.parentNode.getAttribute("data-reference") : null;
    list.textContent = "";
    if (!works.length) {
      var li = document.createElement("li");
      li.className = "leer";
      li.textContent = "Keine Baustellen gefunden.";
      list.appendChild(li);
      return;
    }
    works.forEach(function (w) {
      var impact = IMPACT[w.impact] || IMPACT.minor;
      var item = document.createElement("li");
      item.className = "werk";
      item.setAttribute("data-reference", w.reference);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "werk-knopf";
      button.setAttribute("aria-controls", "detail");
      if (state.selected === w.reference) { button.setAttribute("aria-current", "true"); }
      var swatch = span("farbe einfluss-" + w.impact);
      swatch.setAttribute("aria-hidden", "true");
      button.appendChild(swatch);
      button.appendChild(span("werk-titel", w.streets.join(", ") + ": " + w.title));
      button.appendChild(span("werk-info", impact.label + " · " + w.period_de
        + (w.overdue ? " · Ende überfällig" : "")));
      button.addEventListener("click", function () { openDetail(w.reference, true); });
      item.appendChild(button);
      list.appendChild(item);
      if (w.reference === focusedRef) { button.focus(); }  // the list was rebuilt under it
    });
  }

  function listButton(reference) {
    var items = list.querySelectorAll(".werk");
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute("data-reference") === reference) {
        return items[i].querySelector("button");
      }
    }
    return null;
  }

  // -- detail ----------------------------------------------------------------------------

  function setText(id, text) { el(id).textContent = text; }

  function openDetail(reference, fromList) {
    state.openerRef = fromList ? reference : null;
    var known = state.byRef[reference];
    var ready = known ? Promise.resolve(known)
      : getJson(config.api + "/" + encodeURIComponent(reference));
    return ready.then(function (w) {
      state.selected = w.reference;
      showDetail(w);
    }).catch(function () {
      statusLine.textContent = "Zur Baustelle " + reference
        + " gibt es keine öffentlichen Angaben (mehr).";
    });
  }

  function showDetail(w) {
    var impact = IMPACT[w.impact] || IMPACT.minor;
    var badge = el("detail-einfluss");
    badge.textContent = "";
    var swatch = span("farbe einfluss-" + w.impact);
    swatch.setAttribute("aria-hidden", "true");
    badge.appendChild(swatch);
    badge.appendChild(document.createTextNode(impact.label));
    setText("detail-titel", w.title);
    setText("detail-strassen", w.streets.join(", ") + " · Bezirk " + w.district);
    setText("detail-was", w.description);
    setText("detail-verkehr", w.obstructions_de.length ? w.obstructions_de.join(", ")
      : "Keine Einschränkungen für den Fahrverkehr");
    var who = w.promoter + " (" + w.sector_de + ")";
    if (w.contractor) { who += "\nAusführende Firma: " + w.contractor; }
    setText("detail-wer", who);
    var until = "voraussichtlich bis " + w.end_de;
    if (w.end_verified) { until = "beendet am " + w.end_de; }
    if (w.overdue) { until += " – Ende überfällig, noch nicht gemeldet"; }
    until += "\n" + (w.start_verified ? "begonnen am " : "Beginn: ") + w.start_de;
    setText("detail-bis", until);
    setText("detail-arbeitszeiten", (w.working_hours || "keine Angabe")
      + (w.night_works ? " (auch nachts)" : ""));
    setText("detail-umleitung", w.detour_description
      || (w.detour_geometry ? "Umleitung siehe Karte" : "Keine Umleitung ausgeschildert"));
    setText("detail-kontakt", w.public_contact || "Keine Kontaktangabe");
    setText("detail-nummer", w.reference);
    setText("detail-stand", w.status_de);
    var calendar = el("detail-kalender");
    calendar.href = config.api + "/feeds/ical?street=" + encodeURIComponent(w.streets[0] || "");
    detail.hidden = false;
    markSelected(w.reference);
    highlight(w);
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", "/roadworks/" + encodeURIComponent(w.reference));
    }
    el("detail-titel").focus();
  }

  function markSelected(reference) {
    var buttons = list.querySelectorAll(".werk");
    Array.prototype.forEach.call(buttons, function (item) {
      var b = item.querySelector("button");
      if (item.getAttribute("data-reference") === reference) {
        b.setAttribute("aria-current", "true");
      } else {
        b.removeAttribute("aria-current");
      }
    });
  }

  function highlight(w) {
    if (!map) { return; }
    highlightLayer.clearLayers();
    var outline = L.geoJSON(w.geometry, {
      style: function () {
        return { color: "#005fcc", weight: 4, fill: false, className: "werk-auswahl" };
      }
    }).addTo(highlightLayer);
    var bounds = outline.getBounds();
    if (w.detour_geometry) {
      var detour = L.geoJSON(w.detour_geometry, {
        style: function () {
          return { color: "#005fcc", weight: 4, dashArray: "8 6", className: "werk-umleitung" };
        }
      }).addTo(highlightLayer);
      bounds.extend(detour.getBounds());
    }
    var options = panelPadding();
    options.maxZoom = 17;
    map.fitBounds(bounds, options);
  }

  function closeDetail() {
    if (detail.hidden) { return; }
    detail.hidden = true;
    state.selected = null;
    markSelected(null);
    if (highlightLayer) { highlightLayer.clearLayers(); }
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", "/roadworks");
    }
    var opener = state.openerRef ? listButton(state.openerRef) : null;
    state.openerRef = null;
    if (opener) { opener.focus(); } else { el("liste-titel").focus(); }
  }

  // -- wiring ----------------------------------------------------------------------------

  function start() {
    if (config.publisher) { setText("herausgeber", config.publisher); }
    el("ab").value = config.today;
    setUpMap();
    el("filter").addEventListener("submit", function (ev) { ev.preventDefault(); load(); });
    el("filter").addEventListener("change", function (ev) {
      if (ev.target.name === "zeitraum" || ev.target.id === "ab") { load(); }
    });
    el("suche").addEventListener("input", function () {
      window.clearTimeout(timer);
      timer = window.setTimeout(load, 350);
    });
    el("detail-schliessen").addEventListener("click", closeDetail);
    document.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape" && !detail.hidden) { closeDetail(); }
    });
    load();
    if (config.selected) { openDetail(config.selected, false); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
