//! Rezgo as a vendor view of the booking store: `GET /rezgo/xml?i=search_bookings` with query `transcode` + `key`, answered in XML (ref §3.1).

use axum::response::Response;

use super::faults::soft_failure;
use super::vendor::{
    Vendor, VendorRequest, money, parse_date, rezgo_error, unix_of_date, xml_escape, xml_response,
};
use super::{Booking, Shared};

/// Rezgo company id (query `transcode`).
pub const REZGO_CID: &str = "9999";
/// Rezgo API key (query `key`).
pub const REZGO_KEY: &str = "SIM-REZGO-KEY";

pub(super) const REZGO_PATH: &str = "/rezgo/xml";

/// Text as CDATA; a `]]>` inside is split across two sections so it survives.
fn cdata(s: &str) -> String {
    format!("<![CDATA[{}]]>", s.replace("]]>", "]]]]><![CDATA[>"))
}

impl Booking {
    /// ref §3.1: 1 received/confirmed, 2 pending, 3 cancelled.
    fn rezgo_status(&self) -> u8 {
        match self.status {
            "cancelled" => 3,
            "request" => 2,
            _ => 1,
        }
    }

    /// One `<booking>` element (ref §3.1 field definitions); guest fields in CDATA.
    fn to_rezgo(&self) -> String {
        let mut x = String::from("  <booking>\n");
        let mut field = |name: &str, value: String| {
            x.push_str(&format!("    <{name}>{value}</{name}>\n"));
        };
        field("trans_num", format!("SIM{}", self.id));
        field("item_id", self.room_id.to_string());
        field("tour_name", xml_escape(&format!("Room {}", self.room_id)));
        field("status", self.rezgo_status().to_string());
        field("date", unix_of_date(self.arrival).to_string());
        field("date_purchased", self.booking_time.timestamp().to_string());
        field("updated", self.modified_time.timestamp().to_string());
        field("adult_num", self.num_adult.to_string());
        field("child_num", self.num_child.to_string());
        field("overall_total", money(self.price));
        field("first_name", cdata(&self.first_name));
        field("last_name", cdata(&self.last_name));
        field("email_address", cdata(&self.email));
        x.push_str("  </booking>\n");
        x
    }
}

/// `GET /rezgo/xml` (ref §3.1): query `transcode` + `key`; `i=search_bookings` with
/// `t=date_purchased&q=<YYYY-MM-DD YYYY-MM-DD>` (purchase-date window, both days included) or
/// `q=<trans_num>`. `<response><total>N</total><booking>..</booking>..</response>`: one booking
/// is one element, none is `<total>0</total>` alone; errors are `<response><error>` with 200.
pub(super) fn rezgo(shared: &Shared, req: &VendorRequest) -> Response {
    if req.param("transcode") != Some(REZGO_CID) || req.param("key") != Some(REZGO_KEY) {
        return xml_response(rezgo_error("Invalid transcode or API key"));
    }
    let mut st = shared.lock();
    if st.vendor.take_soft_fail() {
        return soft_failure(Vendor::Rezgo);
    }
    if req.param("i") != Some("search_bookings") {
        return xml_response(rezgo_error("Unknown or missing instruction (i)"));
    }
    let Some(q) = req.param("q").map(str::trim) else {
        return xml_response(rezgo_error("Missing search query (q)"));
    };
    let selected: Vec<&Booking> = match req.param("t").map(str::trim) {
        Some("date_purchased") => {
            let mut days = q.split_whitespace().map(parse_date);
            let (Some(Some(start)), Some(Some(end)), None) =
                (days.next(), days.next(), days.next())
            else {
                return xml_response(rezgo_error("q must be two dates: YYYY-MM-DD YYYY-MM-DD"));
            };
            st.bookings
                .values()
                .filter(|b| {
                    let bought = b.booking_time.date_naive();
                    bought >= start && bought <= end
                })
                .collect()
        }
        None => st
            .bookings
            .values()
            .filter(|b| format!("SIM{}", b.id).eq_ignore_ascii_case(q))
            .collect(),
        Some(other) => {
            return xml_response(rezgo_error(&format!("Unsupported search type t={other}")));
        }
    };
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <total>{}</total>\n",
        selected.len()
    );
    for b in &selected {
        xml.push_str(&b.to_rezgo());
    }
    xml.push_str("</response>\n");
    drop(st);
    xml_response(xml)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::client;
    use super::super::test_support::vendors::{
        date, day, header, rezgo, send, sim, stored, xml_values,
    };
    use super::super::vendor::ymd;
    use super::*;
    use chrono::{DateTime, Utc};

    #[tokio::test]
    async fn rezgo_single_many_none_and_cdata() {
        let sim = sim(3).await;
        let c = client();
        let (tricky_first, tricky_last) = ("Zoë ]]> <b>&amp;", "O'Brien & <Sons> ]]]]>");
        assert!(sim.set_guest_name(1001, tricky_first, tricky_last));
        assert!(sim.cancel_booking(1003));

        let (status, _, body) = send(c.get(sim.rezgo_url()).query(&[
            ("transcode", REZGO_CID),
            ("key", "wrong"),
            ("i", "search_bookings"),
            ("q", "SIM1001"),
        ]))
        .await;
        assert_eq!(status, 200);
        assert!(
            body.contains("<response><error>") && !body.contains("<total>"),
            "{body}"
        );

        let today = Utc::now().date_naive();
        let window = format!("{} {}", ymd(day(today, -4)), ymd(today));
        let (status, h, many) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", window.as_str())],
        ))
        .await;
        assert_eq!(status, 200);
        assert!(header(&h, "content-type").contains("xml"));
        assert_eq!(xml_values(&many, "total"), ["3"]);
        assert_eq!(many.matches("<booking>").count(), 3);
        assert_eq!(
            xml_values(&many, "trans_num"),
            ["SIM1001", "SIM1002", "SIM1003"]
        );
        assert_eq!(xml_values(&many, "status")[2], "3");
        assert_eq!(xml_values(&many, "first_name")[0], tricky_first);
        assert_eq!(xml_values(&many, "last_name")[0], tricky_last);
        assert!(many.contains("<![CDATA["));

        let (_, _, one) = send(rezgo(&c, &sim, &[("q", "SIM1002")])).await;
        assert_eq!(xml_values(&one, "total"), ["1"]);
        assert_eq!(one.matches("<booking>").count(), 1);
        let b = stored(&sim, 1002);
        assert_eq!(
            xml_values(&one, "email_address"),
            [b["email"].as_str().expect("e")]
        );
        assert_eq!(xml_values(&one, "adult_num"), [b["numAdult"].to_string()]);
        assert_eq!(
            xml_values(&one, "overall_total"),
            [format!("{:.2}", b["price"].as_f64().expect("p"))]
        );
        let arrival = date(b["arrival"].as_str().expect("a"));
        assert_eq!(
            xml_values(&one, "date"),
            [unix_of_date(arrival).to_string()]
        );
        let updated = DateTime::parse_from_rfc3339(b["modifiedTime"].as_str().expect("m"))
            .expect("rfc3339")
            .timestamp();
        assert_eq!(xml_values(&one, "updated"), [updated.to_string()]);

        let (_, _, none) = send(rezgo(&c, &sim, &[("q", "SIM9999")])).await;
        assert_eq!(
            none,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <total>0</total>\n</response>\n"
        );
        let later = format!("{} {}", ymd(day(today, 1)), ymd(day(today, 2)));
        let (_, _, none) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", later.as_str())],
        ))
        .await;
        assert_eq!(xml_values(&none, "total"), ["0"]);
        assert!(!none.contains("<booking>"));
        let (_, _, bad) = send(rezgo(
            &c,
            &sim,
            &[("t", "date_purchased"), ("q", "last week")],
        ))
        .await;
        assert!(bad.contains("<error>"), "{bad}");
    }
}
