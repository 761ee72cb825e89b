-- PostgreSQL schema wdsl_v5_fixture as webhook-dsl c5037f3 (no schema_version) wrote it; see make_v5.py.
--
-- PostgreSQL database dump
--


-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: wdsl_v5_fixture; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA wdsl_v5_fixture;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: api_keys; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.api_keys (
    key_hash text NOT NULL,
    company_id text NOT NULL,
    prefix text NOT NULL,
    label text DEFAULT ''::text NOT NULL,
    created_at double precision NOT NULL
);


--
-- Name: call_logs; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.call_logs (
    seq bigint NOT NULL,
    company_id text DEFAULT ''::text NOT NULL,
    session_id text NOT NULL,
    at double precision NOT NULL,
    record text NOT NULL,
    state text DEFAULT 'done'::text NOT NULL
);


--
-- Name: call_logs_seq_seq; Type: SEQUENCE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE SEQUENCE wdsl_v5_fixture.call_logs_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: call_logs_seq_seq; Type: SEQUENCE OWNED BY; Schema: wdsl_v5_fixture; Owner: -
--

ALTER SEQUENCE wdsl_v5_fixture.call_logs_seq_seq OWNED BY wdsl_v5_fixture.call_logs.seq;


--
-- Name: dashboard_sessions; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.dashboard_sessions (
    token_hash text NOT NULL,
    company_id text NOT NULL,
    key_hash text NOT NULL,
    created_at double precision NOT NULL,
    expires_at double precision NOT NULL
);


--
-- Name: secrets; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.secrets (
    company_id text NOT NULL,
    name text NOT NULL,
    value text NOT NULL,
    updated_at double precision NOT NULL
);


--
-- Name: sessions; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.sessions (
    company_id text DEFAULT ''::text NOT NULL,
    id text NOT NULL,
    assistant_id text DEFAULT ''::text NOT NULL,
    client_data jsonb DEFAULT '{}'::jsonb NOT NULL,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL
);


--
-- Name: write_probe; Type: TABLE; Schema: wdsl_v5_fixture; Owner: -
--

CREATE TABLE wdsl_v5_fixture.write_probe (
    id integer NOT NULL,
    at double precision NOT NULL
);


--
-- Name: call_logs seq; Type: DEFAULT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.call_logs ALTER COLUMN seq SET DEFAULT nextval('wdsl_v5_fixture.call_logs_seq_seq'::regclass);


--
-- Data for Name: api_keys; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.api_keys VALUES ('2f4aa6446001aa0f6aff6d0ca18031de9f95cc17250c7a0809b1230bb2afcec8', 'acme', 'wdsl_fixtur', 'ci', 1796208894.3625913);
INSERT INTO wdsl_v5_fixture.api_keys VALUES ('165f4f295c37011faf3a95807e70549524368d8ffdcd72a79ce75aac91fd8888', 'globex', 'wdsl_fixtur', '', 1796208894.3635561);


--
-- Data for Name: call_logs; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.call_logs VALUES (1, 'acme', 'S1', 1700000000, '{"at": 1700000000.0, "trigger": "check_order_0", "method": "GET", "url": "https://erp.example/api/check_order_0", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (2, 'acme', 'S1', 1700000060, '{"at": 1700000060.0, "trigger": "check_order_1", "method": "GET", "url": "https://erp.example/api/check_order_1", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (3, 'acme', 'S1', 1700000120, '{"at": 1700000120.0, "trigger": "check_order_2", "method": "GET", "url": "https://erp.example/api/check_order_2", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (4, 'acme', 'S1', 1700000180, '{"at": 1700000180.0, "trigger": "check_order_3", "method": "GET", "url": "https://erp.example/api/check_order_3", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (5, 'acme', 'S1', 1700000240, '{"at": 1700000240.0, "trigger": "place_order", "method": "GET", "url": "https://erp.example/api/place_order", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {"last_order": "O-1"}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (6, 'acme', 'S1', 1700000300, '{"at": 1700000301.0, "trigger": "refund", "method": "GET", "url": "https://erp.example/api/refund", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (7, 'acme', 'S1', 1700000360, '{"at": 1700000360.0, "trigger": "cancel", "method": "GET", "url": "https://erp.example/api/cancel", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": [], "expires_at": 1700000390.0}', 'started');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (8, 'acme', 'S2', 1700000030, '{"at": 1700000030.0, "trigger": "check_order_s2", "method": "GET", "url": "https://erp.example/api/check_order_s2", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (9, 'globex', 'S1', 1700000000, '{"at": 1700000000.0, "trigger": "ticket_0", "method": "GET", "url": "https://erp.example/api/ticket_0", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (10, 'globex', 'S1', 1700000090, '{"at": 1700000090.0, "trigger": "ticket_1", "method": "GET", "url": "https://erp.example/api/ticket_1", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');
INSERT INTO wdsl_v5_fixture.call_logs VALUES (11, 'globex', 'S1', 1700000180, '{"at": 1700000180.0, "trigger": "ticket_2", "method": "GET", "url": "https://erp.example/api/ticket_2", "status": 200, "ok": true, "duration_ms": 12.5, "client_data_merged": {}, "warnings": []}', 'done');


--
-- Data for Name: dashboard_sessions; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.dashboard_sessions VALUES ('tttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttttt', 'acme', '2f4aa6446001aa0f6aff6d0ca18031de9f95cc17250c7a0809b1230bb2afcec8', 1796208894.3656268, 4102444800);


--
-- Data for Name: secrets; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.secrets VALUES ('acme', 'erp_token', 'fixture-erp-token-0001', 1796208894.3639443);
INSERT INTO wdsl_v5_fixture.secrets VALUES ('acme', 'acme_pin', 'fixture-pin-00002', 1796208894.364867);
INSERT INTO wdsl_v5_fixture.secrets VALUES ('globex', 'helpdesk_api_key', 'fixture-helpdesk-0003', 1796208894.365254);


--
-- Data for Name: sessions; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.sessions VALUES ('acme', 'S2', 'asst_2', '{}', 1796208894.3541312, 1796208894.3541312);
INSERT INTO wdsl_v5_fixture.sessions VALUES ('globex', 'S1', '', '{"plan": "gold"}', 1796208894.354851, 1796208894.354851);
INSERT INTO wdsl_v5_fixture.sessions VALUES ('acme', 'S1', 'asst_1', '{"big": 1180591620717411303424, "text": "é😀", "nested": {"list": [1, 2.5, null, true]}, "customer": "Ana Lima", "last_order": "O-1"}', 1796208894.3520858, 1796208894.357961);


--
-- Data for Name: write_probe; Type: TABLE DATA; Schema: wdsl_v5_fixture; Owner: -
--

INSERT INTO wdsl_v5_fixture.write_probe VALUES (1, 1796208894.3672364);


--
-- Name: call_logs_seq_seq; Type: SEQUENCE SET; Schema: wdsl_v5_fixture; Owner: -
--

SELECT pg_catalog.setval('wdsl_v5_fixture.call_logs_seq_seq', 11, true);


--
-- Name: api_keys api_keys_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.api_keys
    ADD CONSTRAINT api_keys_pkey PRIMARY KEY (key_hash);


--
-- Name: call_logs call_logs_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.call_logs
    ADD CONSTRAINT call_logs_pkey PRIMARY KEY (seq);


--
-- Name: dashboard_sessions dashboard_sessions_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.dashboard_sessions
    ADD CONSTRAINT dashboard_sessions_pkey PRIMARY KEY (token_hash);


--
-- Name: secrets secrets_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.secrets
    ADD CONSTRAINT secrets_pkey PRIMARY KEY (company_id, name);


--
-- Name: sessions sessions_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.sessions
    ADD CONSTRAINT sessions_pkey PRIMARY KEY (company_id, id);


--
-- Name: write_probe write_probe_pkey; Type: CONSTRAINT; Schema: wdsl_v5_fixture; Owner: -
--

ALTER TABLE ONLY wdsl_v5_fixture.write_probe
    ADD CONSTRAINT write_probe_pkey PRIMARY KEY (id);


--
-- Name: api_keys_by_company; Type: INDEX; Schema: wdsl_v5_fixture; Owner: -
--

CREATE INDEX api_keys_by_company ON wdsl_v5_fixture.api_keys USING btree (company_id);


--
-- Name: call_logs_by_company_session; Type: INDEX; Schema: wdsl_v5_fixture; Owner: -
--

CREATE INDEX call_logs_by_company_session ON wdsl_v5_fixture.call_logs USING btree (company_id, session_id, seq);


--
-- Name: dashboard_sessions_by_key; Type: INDEX; Schema: wdsl_v5_fixture; Owner: -
--

CREATE INDEX dashboard_sessions_by_key ON wdsl_v5_fixture.dashboard_sessions USING btree (key_hash);


--
-- Name: sessions_by_company_updated; Type: INDEX; Schema: wdsl_v5_fixture; Owner: -
--

CREATE INDEX sessions_by_company_updated ON wdsl_v5_fixture.sessions USING btree (company_id, updated_at);


--
-- Name: sessions_by_id; Type: INDEX; Schema: wdsl_v5_fixture; Owner: -
--

CREATE INDEX sessions_by_id ON wdsl_v5_fixture.sessions USING btree (id);


--
-- PostgreSQL database dump complete
--


